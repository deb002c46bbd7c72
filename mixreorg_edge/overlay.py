"""Colour overlays of label maps: each class name keeps one colour whatever the vocabulary, background is left
unpainted, small images are enlarged for display, and the legend of the classes present stands beside the image."""

from __future__ import annotations

import colorsys
import hashlib
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .vocab import BACKGROUND

MIN_DISPLAY_SIDE = 256  # smaller images are enlarged (nearest neighbour) to at least this short side


PALETTE_SIZE = 24  # 12 hues x 2 shades: far apart enough to tell classes apart


def _slot_colour(slot: int) -> tuple[int, int, int]:
    hue, shade = (slot % 12) / 12, slot // 12
    rgb = colorsys.hsv_to_rgb(hue, 0.9 if shade == 0 else 0.55, 0.95 if shade == 0 else 0.65)
    return tuple(int(round(c * 255)) for c in rgb)


def _name_slot(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.strip().lower().encode()).digest()[:4], "big") % PALETTE_SIZE


def class_colours(names: list[str]) -> list[tuple[int, int, int]]:
    """A colour per class name: the palette slot a hash of the name picks, so a class keeps its colour in every
    vocabulary; where two names of one vocabulary pick the same slot, the later name (in sorted order) takes the next
    free one. Past PALETTE_SIZE classes colours repeat."""
    taken: dict[str, int] = {}
    for name in sorted(set(names)):
        slot = _name_slot(name)
        for step in range(PALETTE_SIZE):
            if (slot + step) % PALETTE_SIZE not in taken.values():
                slot = (slot + step) % PALETTE_SIZE
                break
        taken[name] = slot
    return [_slot_colour(taken[name]) for name in names]


def display_scale(image: Image.Image) -> int:
    """The whole-number enlargement that brings the image's short side to at least MIN_DISPLAY_SIDE."""
    return max(1, math.ceil(MIN_DISPLAY_SIDE / max(1, min(image.size))))


def draw_overlay(image: Image.Image, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> Image.Image:
    """`image` (enlarged if small) with the label map's class colours blended over every class but background, and a
    legend of the classes present (with their share of the pixels) in a panel to its right."""
    colours = np.array(class_colours(names), dtype=np.uint8)
    painted = Image.fromarray(np.array([name != BACKGROUND for name in names])[labels])
    base = image.convert("RGB")
    result = Image.composite(Image.blend(base, Image.fromarray(colours[labels]), alpha), base, painted)  # 8-bit maths
    scale = display_scale(image)
    if scale > 1:
        result = result.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    counts = np.bincount(labels.ravel(), minlength=len(names))
    present = [index for index in np.argsort(-counts) if counts[index]]
    font = ImageFont.load_default(size=max(12, min(result.width, result.height) // 24))
    line = font.size + 6
    texts = [f"{names[i]} {counts[i] / labels.size:.0%}" for i in present]
    panel_width = 16 + font.size + max(int(font.getlength(text)) for text in texts)
    canvas = Image.new("RGB", (result.width + panel_width, max(result.height, 8 + line * len(present))), "white")
    canvas.paste(result, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = result.width + 6, 6
    for index, text in zip(present, texts):
        fill = None if names[index] == BACKGROUND else tuple(int(c) for c in colours[index])
        draw.rectangle((x, y, x + font.size, y + font.size), fill=fill, outline=(0, 0, 0))
        draw.text((x + font.size + 4, y), text, fill=(0, 0, 0), font=font)
        y += line
    return canvas
