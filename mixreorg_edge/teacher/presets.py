"""Named teacher presets: `toy` (2 CPU cores, minutes) and `vit-s` (the paper's GroupViT size)."""

from __future__ import annotations

from ..training import TrainConfig
from .config import EvalConfig, ImageEncoderConfig, MixingConfig, TeacherConfig, TextEncoderConfig


def _toy() -> tuple[TeacherConfig, TrainConfig]:
    teacher = TeacherConfig(
        preset="toy",
        embed_dim=128,
        readout="token",
        keyword_prompts=8,
        keyword_pooling="token",
        keyword_weight=3.0,
        text_batchnorm=True,
        image=ImageEncoderConfig(
            image_size=64,
            patch_size=8,
            stem="conv",
            width=96,
            heads=4,
            depths=(2, 2, 1),
            group_tokens=(16, 8),
            output_groups=(16, 8),
        ),
        text=TextEncoderConfig(context_length=32, width=96, heads=4, layers=3, pooling="mean"),
        # The ablation's `+contextual` rung: tokens of 4 images mixed right after the stem, with the mixed segmentation
        # loss, no progressive mixing or restoration. Chosen on the tuning split at equal time (10 minutes, two seeds,
        # benchmarks/results/ablation_toy_10min.json): 59.80 against `+seg` 58.04 and full MixReorg 44.44.
        mixing=MixingConfig(images=4, block=1, contextual=True, context_depth=0, progressive=False, restoration=False),
        # The training scale (see README); mask refinement chosen on the seed-1 tuning split (benchmarks/RESULTS.md).
        eval=EvalConfig(short_side=64, window=64, stride=32, refine_iterations=20),
    )
    return teacher, TrainConfig(batch_size=64, lr=1e-3, warmup_steps=100, save_every=250)


def _vit_s() -> tuple[TeacherConfig, TrainConfig]:
    teacher = TeacherConfig(
        preset="vit-s",
        mixing=MixingConfig(images=2, block=1, contextual=True, context_depth=1),
    )
    return teacher, TrainConfig(batch_size=256, lr=5e-4, warmup_steps=2000, save_every=1000)


PRESETS = {"toy": _toy, "vit-s": _vit_s}


def get_preset(name: str) -> tuple[TeacherConfig, TrainConfig]:
    """Return fresh (teacher, train) configs for a preset name; unknown names list the valid ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
