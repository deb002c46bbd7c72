"""The ablation ladder: each variant adds one MixReorg component to the previous one."""

from __future__ import annotations

from .config import MixingConfig, TeacherConfig

# name -> MixingConfig fields (on top of the preset's mixing settings); TEACHER_FIELDS are set on the teacher config
VARIANTS: dict[str, dict] = {
    "baseline": {"enabled": False},  # image-text contrastive, no mixing; the preset's keyword loss (toy: token-pooled)
    # GroupViT itself: no mixing, and its multi-label keyword loss on the image embedding (what the group readout
    # is trained by), whatever the preset pools over.
    "baseline-groupvit": {"enabled": False, "keyword_pooling": "image"},
    "+seg": {"enabled": True, "contextual": False, "progressive": False, "restoration": False},  # pixel mixing
    "+contextual": {"enabled": True, "contextual": True, "progressive": False, "restoration": False},
    "+progressive": {"enabled": True, "contextual": True, "progressive": True, "restoration": False},
    "full": {"enabled": True, "contextual": True, "progressive": True, "restoration": True},
    # Not a rung of the ladder: full MixReorg with one transformer layer of per-image context before mixing.
    "full-context1": {
        "enabled": True, "contextual": True, "context_depth": 1, "progressive": True, "restoration": True,
    },
}
TEACHER_FIELDS = ("keyword_pooling",)


def apply_variant(cfg: TeacherConfig, name: str) -> TeacherConfig:
    """Set `cfg.mixing` (and the TEACHER_FIELDS of `cfg`) to an ablation variant (in place; returns cfg)."""
    try:
        changes = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}") from None
    if changes.get("keyword_pooling") and not cfg.keyword_prompts:
        raise ValueError(f"variant {name!r} changes the keyword loss, which the {cfg.preset!r} preset does not have "
                         "(keyword_prompts 0): it would be the plain 'baseline'")
    mixing: MixingConfig = cfg.mixing
    for key, value in changes.items():
        setattr(cfg if key in TEACHER_FIELDS else mixing, key, value)
    return cfg
