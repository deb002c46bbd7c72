"""Initialise the image encoder from a local timm / DeiT ViT checkpoint (the way GroupViT starts from DeiT)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from .image_encoder import GroupViTImageEncoder


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file, or a .pth/.bin with weights_only=True; unwraps a 'model'/'state_dict' entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_vit_into_encoder(encoder: GroupViTImageEncoder, path: Path) -> list[str]:
    """Copy matching ViT weights (blocks in order, patch embedding, position embedding) into `encoder`.

    Returns the names of the encoder tensors that were set; raises ValueError if nothing matched.
    """
    source = read_state_dict(path)
    target = encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for index, block in enumerate(encoder.blocks_in_order()):
        prefix = next(name for name, module in encoder.named_modules() if module is block)
        for key, value in block.state_dict().items():
            src = source.get(f"blocks.{index}.{key}")
            if src is not None and src.shape == value.shape:
                loaded[f"{prefix}.{key}"] = src
    if encoder.cfg.stem == "patch":
        for key in ("weight", "bias"):
            src = source.get(f"patch_embed.proj.{key}")
            if src is not None and src.shape == target[f"stem.{key}"].shape:
                loaded[f"stem.{key}"] = src
    if "pos_embed" in source and source["pos_embed"].shape[-1] == target["pos_embed"].shape[-1]:
        loaded["pos_embed"] = _resize_pos_embed(source["pos_embed"], encoder.grid)
    if not loaded:
        raise ValueError(f"no tensor of {path} matches the image encoder (expected a timm ViT/DeiT state dict)")
    encoder.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def _resize_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Drop class/distillation tokens and resize the square grid of a ViT position embedding."""
    side = int((pos.shape[1]) ** 0.5)
    extra = pos.shape[1] - side * side
    pos = pos[:, extra:]
    pos = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False)
    return pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
