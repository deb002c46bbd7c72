"""Student backbones: a thin registry of mobile timm families, built as stride-8/16/32 feature extractors."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import timm
import torch
from timm.models import load_state_dict
from torch import nn

STRIDES = (8, 16, 32)
_MAX_LISTED = 5

# family -> {size: timm model name}; the first size is the family's default.
FAMILIES: dict[str, dict[str, str]] = {
    "mobilevit": {"xxs": "mobilevit_xxs", "xs": "mobilevit_xs", "s": "mobilevit_s"},
    "mobilevitv2": {"050": "mobilevitv2_050", "075": "mobilevitv2_075", "100": "mobilevitv2_100"},
    "efficientvit": {"b0": "efficientvit_b0", "b1": "efficientvit_b1"},
    "repvit": {"m0_9": "repvit_m0_9", "m1_0": "repvit_m1_0", "m1_1": "repvit_m1_1"},
    "fastvit": {"t8": "fastvit_t8", "t12": "fastvit_t12", "s12": "fastvit_s12"},
    "mobilenetv4": {"conv_small": "mobilenetv4_conv_small", "conv_medium": "mobilenetv4_conv_medium"},
}


@dataclass(frozen=True)
class StudentSpec:
    """A parsed student choice: family, size and the timm model it maps to."""

    family: str
    size: str
    timm_name: str

    def __str__(self) -> str:
        return f"{self.family}:{self.size}"


def student_choices() -> str:
    """Every valid spec, e.g. 'mobilevit[:xxs|xs|s], mobilevitv2[:050|075|100], ...'."""
    return ", ".join(f"{family}[:{'|'.join(sizes)}]" for family, sizes in FAMILIES.items())


def parse_student(spec: str) -> StudentSpec:
    """'family' (default size) or 'family:size' -> StudentSpec; ValueError listing the choices otherwise."""
    family, colon, size = spec.strip().partition(":")
    sizes = FAMILIES.get(family)
    if sizes is None or (colon and size not in sizes):
        raise ValueError(f"unknown student {spec!r}; choose one of: {student_choices()}")
    size = size if colon else next(iter(sizes))
    return StudentSpec(family, size, sizes[size])


@lru_cache(maxsize=None)
def _stride_levels(timm_name: str) -> tuple[int, ...]:
    """Indices of the last feature level at each of STRIDES, read from `feature_info` of a meta-device build."""
    with torch.device("meta"):
        probe = timm.create_model(timm_name, pretrained=False, features_only=True)
    reductions = probe.feature_info.reduction()
    missing = [stride for stride in STRIDES if stride not in reductions]
    if missing:
        raise ValueError(f"{timm_name} has no feature level at stride {missing} (levels: {reductions})")
    return tuple(max(i for i, r in enumerate(reductions) if r == stride) for stride in STRIDES)


def create_backbone(spec: StudentSpec, weights: Path | None = None) -> nn.Module:
    """timm feature extractor returning the stride-8/16/32 maps (a list); optional local weights.

    `backbone.feature_info.channels()` gives the three maps' channels."""
    backbone = timm.create_model(
        spec.timm_name, pretrained=False, features_only=True, out_indices=_stride_levels(spec.timm_name)
    )
    if weights is not None:
        missing, unexpected = load_backbone_weights(backbone, weights)
        if missing or unexpected:
            warnings.warn(
                f"{weights} -> {spec.timm_name}: {len(missing)} missing keys {missing[:_MAX_LISTED]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:_MAX_LISTED]}",
                stacklevel=2,
            )
    return backbone


def load_backbone_weights(backbone: nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Load a local .safetensors / .pth state dict into `backbone`; return (missing, unexpected) keys.

    Accepts both the feature extractor's own keys and the full timm model's (feature extractors flatten top-level
    sequentials: 'stages.0.x' -> 'stages_0.x'); a classifier head shows up as unexpected. Raises ValueError when
    no key matches or a matching key has the wrong shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = load_state_dict(str(path), weights_only=True)
    expected = backbone.state_dict()
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state.items():
        target = next((k for k in (key, key.replace(".", "_", 1)) if k in expected), None)
        if target is None:
            unexpected.append(key)
        else:
            matched[target] = tensor
    if not matched:
        raise ValueError(f"no key of {path} matches the backbone (e.g. {sorted(state)[:_MAX_LISTED]})")
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in matched.items()
        if v.shape != expected[k].shape
    ]
    if shapes:
        raise ValueError(f"{path} does not fit the backbone; {len(shapes)} shape mismatches: {shapes[:_MAX_LISTED]}")
    backbone.load_state_dict(matched, strict=False)
    return sorted(expected.keys() - matched.keys()), unexpected
