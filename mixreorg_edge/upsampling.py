"""Bilinear upsampling by an integer factor f (`F.interpolate(..., mode="bilinear", align_corners=False)`) written as
a 3x3 convolution into the f*f sub-pixel phases ("subpixel"): the same values to float rounding, in a graph that
some runtimes run much faster than their resize op (OpenVINO: `benchmarks/upsampling.py`). A per-pixel decision such
as the label rule is taken in the phase layout, and only its one-channel result is rearranged into pixels.

Output pixel i = f*J + r lies at source coordinate J + (r - (f-1)/2) / f, so phase r mixes source pixels J-1, J and
J+1 with fixed weights; the borders clamp as interpolate does (replicate padding)."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

UPSAMPLING = ("interpolate", "subpixel")


@lru_cache(maxsize=None)
def _phase_weights(factor: int) -> tuple:
    """Per phase (ry, rx), in that order: the 3x3 weights of source pixels (J-1, J, J+1)^2, as Python floats."""
    middle = (factor - 1) / 2
    taps = [(max(middle - r, 0) / factor, 1 - abs(r - middle) / factor, max(r - middle, 0) / factor)
            for r in range(factor)]
    return tuple((tuple(tuple(a * b for b in taps[rx]) for a in taps[ry]),)
                 for ry in range(factor) for rx in range(factor))


def phase_kernel(factor: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(f*f, 1, 3, 3): the weights of source pixels (J-1, J, J+1)^2 for each output phase (ry, rx). A new tensor
    from Python numbers on every call: one constant in an exported graph (a cached tensor would leak out of a
    trace)."""
    return torch.tensor(_phase_weights(factor), dtype=dtype)


def upsampling_factor(low: tuple[int, int], high: tuple[int, int]) -> int | None:
    """The integer factor from a (h, w) map to (H, W), or None when it is not one factor on both axes."""
    (h, w), (height, width) = low, high
    if height % h or width % w or height // h != width // w:
        return None
    return height // h


def subpixel_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, f*f*h, w): the bilinear upsample's pixels in phase layout (see `phases_to_pixels`)."""
    batch, channels, height, width = x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate").reshape(batch * channels, 1, height + 2, width + 2)
    phases = F.conv2d(padded, phase_kernel(factor, x.dtype))  # (B*C, f*f, h, w)
    return phases.reshape(batch, channels, factor * factor * height, width)


def phases_to_pixels(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, f*f*h, w) per-pixel results in phase layout -> (B, f*h, f*w) in pixel order."""
    batch, rows, width = x.shape
    height = rows // (factor * factor)
    return (x.reshape(batch, factor, factor, height, width).permute(0, 3, 1, 4, 2)
            .reshape(batch, height * factor, width * factor))
