"""Image conversion and normalisation shared by training, evaluation, `segment` and exported models (CLIP's
statistics, as GroupViT)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> float32 normalised with IMAGE_MEAN / IMAGE_STD."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def to_rgb8(image: Image.Image) -> Image.Image:
    """RGB with 8 bits a channel. A 16-bit grayscale image (Pillow mode I;16 or I, as 16-bit PNGs open) is scaled down
    to 8 bits; Pillow's own conversion clips it at 255, which turns almost every pixel white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        scaled = np.clip(np.asarray(image, dtype=np.float32) / 257.0, 0, 255).round().astype(np.uint8)
        image = Image.fromarray(scaled)
    return image.convert("RGB")
