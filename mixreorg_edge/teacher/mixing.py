"""Patch mixing and its exact inverse (mixing restoration).

A batch of N images is split into groups of K consecutive images. For every token position p (or square block of
positions) of a group, an independent random permutation decides which of the K source images each of the K mixed
images takes that token from. Tokens keep their position, so the K mixed images together hold every source token
exactly once: `restore(mix(x)) == x`, and each mixed token's label is its source image (whose caption it keeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixPlan:
    """`source[n, p]` is the batch index of the image whose token p mixed image n holds."""

    source: torch.Tensor  # (N, L) long

    @property
    def num_tokens(self) -> int:
        return self.source.shape[1]


def check_groups(batch: int, images: int) -> None:
    """A batch must split into groups of `images` >= 2 images to be mixed."""
    if images < 2:
        raise ValueError(f"mixing needs at least 2 images per group, got {images}")
    if batch % images:
        raise ValueError(f"batch size {batch} is not divisible by the number of mixed images {images}")


def mixed_batch_size(batch: int, images: int, fraction: float) -> int:
    """How many of a batch's images (whole mixing groups, at least one) are mixed when `fraction` of its groups are."""
    check_groups(batch, images)
    if not 0 < fraction <= 1:
        raise ValueError(f"the mixed fraction of a batch must be in (0, 1], got {fraction}")
    return max(1, round(fraction * (batch // images))) * images


def make_plan(
    batch: int, grid: tuple[int, int], images: int, block: int = 1, generator: torch.Generator | None = None
) -> MixPlan:
    """Draw a mixing plan for `batch` images on an (h, w) token grid, mixing groups of `images` images."""
    check_groups(batch, images)
    h, w = grid
    bh, bw = -(-h // block), -(-w // block)
    groups = batch // images
    # One random permutation of the K group members per (group, block).
    keys = torch.rand(groups, bh * bw, images, generator=generator)
    perm = keys.argsort(dim=-1)  # (G, B, K): mixed image j takes block b from member perm[g, b, j]
    perm = perm.view(groups, bh, bw, images).repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]
    perm = perm.permute(0, 3, 1, 2).reshape(groups, images, h * w)  # (G, K, L)
    offsets = (torch.arange(groups) * images).view(groups, 1, 1)
    return MixPlan(source=(perm + offsets).reshape(batch, h * w))


def mix_tokens(tokens: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """(N, L, D) tokens of the original images -> (N, L, D) tokens of the mixed images."""
    positions = torch.arange(plan.num_tokens, device=tokens.device).expand_as(plan.source)
    return tokens[plan.source.to(tokens.device), positions]


def restore_tokens(mixed: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """Inverse of `mix_tokens`: put every mixed token back at its source image and position."""
    positions = torch.arange(plan.num_tokens, device=mixed.device).expand_as(plan.source)
    restored = torch.empty_like(mixed)
    restored[plan.source.to(mixed.device), positions] = mixed
    return restored


def mix_pixels(images: torch.Tensor, plan: MixPlan, patch: int) -> torch.Tensor:
    """Mix raw pixel patches (the non-contextual variant): (N, C, H, W) -> (N, C, H, W), H = grid_h * patch."""
    n, c, height, width = images.shape
    patches = F.unfold(images, kernel_size=patch, stride=patch).transpose(1, 2)  # (N, L, C*p*p)
    mixed = mix_tokens(patches, plan).transpose(1, 2)
    return F.fold(mixed, output_size=(height, width), kernel_size=patch, stride=patch)
