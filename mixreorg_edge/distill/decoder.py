"""A light FPN decoder: stride-8/16/32 backbone maps -> L2-normalised joint-space embeddings at stride 8."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FPNDecoder(nn.Module):
    """1x1 laterals to `width` channels, top-down nearest upsample + add, 3x3 conv-BN-ReLU, 1x1 projection to E.

    Static shapes only (upsampling targets the next map's size), so it exports at any fixed input size."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, width: int = 64) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(channels, width, kernel_size=1) for channels in in_channels)
        self.refine = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Maps from fine (stride 8) to coarse (stride 32) -> (B, E, H/8, W/8), unit norm over channels."""
        x = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            x = lateral(feature) + F.interpolate(x, size=feature.shape[-2:], mode="nearest")
        return F.normalize(self.proj(self.refine(x)), dim=1)
