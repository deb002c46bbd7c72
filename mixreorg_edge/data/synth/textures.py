"""Procedural background textures ("stuff"): sky, grass, water, sand, wall."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from .colors import hsv, uniform


def _smooth_noise(rng: np.random.Generator, n: int, cells: tuple[int, int]) -> np.ndarray:
    """(n, n) float32 value noise in about [0, 1] from a (rows, cols) random grid."""
    grid = rng.random(cells, dtype=np.float32)
    up = Image.fromarray(grid).resize((n, n), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up), 0.0, 1.0)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    return y, x


def _sky(rng: np.random.Generator, n: int) -> np.ndarray:
    hue = uniform(rng, 195, 228)
    top = np.array(hsv(hue, uniform(rng, 0.5, 0.9), uniform(rng, 0.6, 0.9)), np.float32)
    bottom = np.array(hsv(hue + uniform(rng, -12, 8), uniform(rng, 0.1, 0.35), uniform(rng, 0.88, 1.0)), np.float32)
    t = (np.linspace(0, 1, n, dtype=np.float32) ** uniform(rng, 0.6, 1.6))[:, None, None]
    img = top * (1 - t) + bottom * t
    c = 0.6 * _smooth_noise(rng, n, (int(rng.integers(3, 6)),) * 2) + 0.4 * _smooth_noise(rng, n, (10, 10))
    cover = uniform(rng, 0.45, 0.72)
    alpha = (np.clip((c - cover) / 0.12, 0, 1) * uniform(rng, 0.75, 0.98))[..., None]
    cloud = np.array(hsv(hue, uniform(rng, 0.0, 0.08), uniform(rng, 0.88, 1.0)), np.float32)
    shade = 1.0 - 0.12 * np.clip((c - cover) / 0.3, 0, 1)[..., None]
    return img * (1 - alpha) + cloud * shade * alpha


def _grass(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(hsv(uniform(rng, 72, 135), uniform(rng, 0.45, 0.85), uniform(rng, 0.4, 0.75)), np.float32)
    blades = _smooth_noise(rng, n, (max(2, n // 10), n // 2))  # tall vertical streaks
    patches = _smooth_noise(rng, n, (4, 4))
    grain = rng.normal(0, 0.05, (n, n)).astype(np.float32)
    img = base * (0.55 + 0.55 * blades + 0.25 * (patches - 0.5) + grain)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(n * n // 250):
        x, y = uniform(rng, 0, n), uniform(rng, 0, n)
        length, lean = uniform(rng, 0.03, 0.08) * n, uniform(rng, -0.4, 0.4)
        tone = base * uniform(rng, 0.55, 1.35)
        draw.line([x, y, x + lean * length, y - length], fill=tuple(int(min(v, 255)) for v in tone), width=1)
    return np.asarray(pil, dtype=np.float32)


def _water(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(hsv(uniform(rng, 180, 222), uniform(rng, 0.5, 0.9), uniform(rng, 0.45, 0.8)), np.float32)
    y, x = _grid(n)
    f, g = uniform(rng, 0.2, 0.45) * 128 / n, uniform(rng, 0.04, 0.1) * 128 / n
    warp = 2.5 * _smooth_noise(rng, n, (5, 5))
    waves = np.sin(y * f + uniform(rng, 1, 3) * np.sin(x * g + uniform(rng, 0, 6.3)) + warp)
    depth = 1.1 - 0.25 * y / n
    img = base * (depth * (0.85 + 0.12 * waves))[..., None]
    glint = np.clip((waves - 0.8) / 0.2, 0, 1)[..., None] * uniform(rng, 0.4, 0.8)
    return img * (1 - glint) + (base + (255 - base) * 0.7) * glint


def _sand(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(hsv(uniform(rng, 28, 48), uniform(rng, 0.25, 0.55), uniform(rng, 0.7, 0.95)), np.float32)
    y, x = _grid(n)
    a = uniform(rng, -0.6, 0.6)
    ripple = np.sin((x * math.sin(a) + y * math.cos(a)) * uniform(rng, 0.12, 0.25) * 128 / n + 4 * _smooth_noise(rng, n, (4, 4)))
    grain = rng.normal(0, 0.06, (n, n)).astype(np.float32)
    specks = (rng.random((n, n)) < 0.03) * uniform(rng, -0.35, -0.15)
    return base * (0.9 + 0.07 * ripple + grain + specks)[..., None]


def _wall(rng: np.random.Generator, n: int) -> np.ndarray:
    bh = max(4, int(n * uniform(rng, 0.08, 0.14)))
    bw = int(bh * uniform(rng, 1.8, 2.6))
    mortar_w = max(1, bh // 6)
    y, x = np.mgrid[0:n, 0:n]
    y = y + int(rng.integers(bh))
    row = y // bh
    xs = x + (row % 2) * (bw // 2) + int(rng.integers(bw))
    col = xs // bw
    if rng.random() < 0.75:  # red / brown / orange brick
        brick = hsv(uniform(rng, 0, 30), uniform(rng, 0.45, 0.8), uniform(rng, 0.4, 0.8))
    else:  # grey / sandy stone
        brick = hsv(uniform(rng, 0, 60), uniform(rng, 0.0, 0.2), uniform(rng, 0.4, 0.8))
    bricks = (row.max() + 1, col.max() + 1)
    jitter = rng.uniform(0.75, 1.15, (*bricks, 1)) * (1 + rng.normal(0, 0.05, (*bricks, 3)))
    img = np.array(brick, np.float32) * jitter[row, col]
    mortar = (y % bh < mortar_w) | (xs % bw < mortar_w)
    img[mortar] = hsv(uniform(rng, 30, 50), uniform(rng, 0.03, 0.15), uniform(rng, 0.65, 0.9))
    return img * (1 + rng.normal(0, 0.04, (n, n, 1)))


_TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": _sky,
    "grass": _grass,
    "water": _water,
    "sand": _sand,
    "wall": _wall,
}

STUFF: tuple[str, ...] = tuple(_TEXTURES)


def render_stuff(rng: np.random.Generator, stuff: str, n: int) -> np.ndarray:
    """Render the named background texture as an (n, n, 3) uint8 array."""
    return np.clip(_TEXTURES[stuff](rng, n), 0, 255).astype(np.uint8)
