"""Image normalisation shared by training, evaluation and exported models (CLIP's statistics, as GroupViT)."""

from __future__ import annotations

import torch

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 normalised with IMAGE_MEAN / IMAGE_STD."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
