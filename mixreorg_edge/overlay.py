"""Colour overlays of label maps, with a legend of the classes present."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(num_classes: int) -> np.ndarray:
    """Distinct RGB colours (golden-ratio hues); (num_classes, 3) uint8."""
    colours = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95) for i in range(num_classes)]
    return (np.array(colours) * 255).astype(np.uint8)


def draw_overlay(image: Image.Image, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> Image.Image:
    """Blend a label map's colours over `image` (same size) and draw a legend of the classes present."""
    colours = palette(len(names))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1 - alpha) * base + alpha * colours[labels].astype(np.float32)
    result = Image.fromarray(blended.round().astype(np.uint8))
    present = [int(i) for i in np.unique(labels)]
    font = ImageFont.load_default(size=max(8, min(image.width, image.height) // 24))
    draw = ImageDraw.Draw(result)
    line = font.size + 2
    y = 2
    for index in present:
        box = (2, y, 2 + font.size, y + font.size)
        draw.rectangle(box, fill=tuple(int(c) for c in colours[index]), outline=(0, 0, 0))
        draw.text((box[2] + 3, y), names[index], fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        y += line
    return result
