"""Pixel-adaptive mask refinement (PAMR; Araslanov & Roth, CVPR 2020) of dense vocabulary logits.

Training-free open-vocabulary segmenters (SCLIP, NACLIP) apply it to their logits after the sliding window: each
pixel's logits become, over a few iterations, an average of its neighbours' (3x3 neighbourhoods at several
dilations), weighted by how alike their colours are relative to the local colour spread. Predictions computed on a
coarse token grid then follow the image's edges. Each step is linear with weights summing to one, so adding the same
bias to a class everywhere commutes with it: the background calibration can be swept on refined logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MaskRefinement:
    """`iterations` of PAMR over 3x3 neighbourhoods at each of `dilations` (pixels at the protocol's resized scale);
    0 iterations = off (GroupViT's protocol)."""

    iterations: int = 0
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"refinement iterations must be 0 (off) or more, got {self.iterations}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"refinement dilations must be positive pixel distances, got {list(self.dilations)}")

    @property
    def enabled(self) -> bool:
        return self.iterations > 0


_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(padded: torch.Tensor, dilation: int, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    top, left = dilation + dy * dilation, dilation + dx * dilation
    return padded[:, :, top : top + height, left : left + width]


def _neighbours(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 8, H, W): the 8 neighbours of every pixel at `dilation`, edges replicated."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (dilation,) * 4, mode="replicate")
    return torch.stack([_shifted(padded, dilation, dy, dx, height, width) for dy, dx in _SHIFTS], dim=2)


def _all_neighbours(x: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    return torch.cat([_neighbours(x, d) for d in dilations], dim=2)


def neighbour_affinities(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """(B, 3, H, W) image -> (B, K, H, W) weights of each pixel's K = 8 x len(dilations) neighbours (summing to 1):
    a softmax over the neighbours of minus their colour distance, in units of a tenth of the local colour spread."""
    neighbours = _all_neighbours(image, dilations)
    distance = (neighbours - image[:, :, None]).abs()
    spread = neighbours.std(dim=2, keepdim=True)
    return (-(distance / (1e-8 + 0.1 * spread)).mean(dim=1)).softmax(dim=1)


def _weighted_neighbour_sum(x: torch.Tensor, weights: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """sum_k weights[:, k] * (neighbour k of x), accumulated one neighbour at a time (stacking all K neighbours of a
    448x448 map costs 16x the time)."""
    height, width = x.shape[-2:]
    total = torch.zeros_like(x)
    k = 0
    for dilation in dilations:
        padded = F.pad(x, (dilation,) * 4, mode="replicate")
        for dy, dx in _SHIFTS:
            total.addcmul_(_shifted(padded, dilation, dy, dx, height, width), weights[:, k : k + 1])
            k += 1
    return total


@torch.no_grad()
def refine_logits(image: torch.Tensor, logits: torch.Tensor, refinement: MaskRefinement) -> torch.Tensor:
    """(B, V, H, W) logits refined along the edges of the (B, 3, H, W) image they were computed for."""
    if image.shape[0] != logits.shape[0] or image.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and logits {tuple(logits.shape)} differ in batch or size")
    if not refinement.enabled:
        return logits
    weights = neighbour_affinities(image.float(), refinement.dilations)
    for _ in range(refinement.iterations):
        logits = _weighted_neighbour_sum(logits, weights, refinement.dilations)
    return logits
