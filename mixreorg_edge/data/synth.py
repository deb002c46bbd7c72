"""Deterministic procedural "synthetic caption world".

Stands in for CC12M (image-caption pairs for training) and PASCAL VOC / Context
(segmentation evaluation). Every image is one procedural background texture
("stuff") with 1-4 distinct procedural icons ("things") pasted on top. Things are
identified by shape: every class has a varied palette so colour alone never names
it. Images are rendered at 2x and box-downsampled; label maps are built at 2x and a
final pixel is IGNORE_INDEX when its 2x2 block holds more than one label.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image, ImageDraw

from mixreorg_edge.data.captions import caption_for

GENERATOR = "mixreorg_edge.data.synth"
VERSION = "1.0"
IGNORE_INDEX = 255
MIN_SIZE = 32
JPEG_QUALITY = 95
VAL_CHUNK = 250
SPLIT_IDS = {"train": 0, "val": 1}

Color = tuple[int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, int, np.random.Generator], None]


# ----------------------------------------------------------------------------- colours


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _hsv(h: float, s: float, v: float) -> Color:
    """Hue in degrees, saturation and value in [0, 1] -> RGB bytes."""
    r, g, b = colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _darker(c: Color, f: float = 0.6) -> Color:
    return int(c[0] * f), int(c[1] * f), int(c[2] * f)


def _lighter(c: Color, f: float = 0.5) -> Color:
    r, g, b = (int(v + (255 - v) * f) for v in c)
    return r, g, b


def _any_color(rng: np.random.Generator, sat: tuple[float, float] = (0.5, 1.0), val: tuple[float, float] = (0.5, 1.0)) -> Color:
    return _hsv(_u(rng, 0, 360), _u(rng, *sat), _u(rng, *val))


def _man_made_color(rng: np.random.Generator) -> Color:
    """Any saturated colour, or (15%) a grey from near-black to near-white."""
    if rng.random() < 0.15:
        v = round(_u(rng, 0.15, 0.95) * 255)
        return v, v, v
    return _any_color(rng, (0.45, 1.0), (0.45, 1.0))


# ----------------------------------------------------------------------------- stuff textures


def _smooth_noise(rng: np.random.Generator, n: int, cells: tuple[int, int]) -> np.ndarray:
    """(n, n) float32 value noise in about [0, 1] from a (rows, cols) random grid."""
    grid = rng.random(cells, dtype=np.float32)
    up = Image.fromarray(grid).resize((n, n), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up), 0.0, 1.0)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    return y, x


def _sky(rng: np.random.Generator, n: int) -> np.ndarray:
    hue = _u(rng, 195, 228)
    top = np.array(_hsv(hue, _u(rng, 0.5, 0.9), _u(rng, 0.6, 0.9)), np.float32)
    bottom = np.array(_hsv(hue + _u(rng, -12, 8), _u(rng, 0.1, 0.35), _u(rng, 0.88, 1.0)), np.float32)
    t = (np.linspace(0, 1, n, dtype=np.float32) ** _u(rng, 0.6, 1.6))[:, None, None]
    img = top * (1 - t) + bottom * t
    c = 0.6 * _smooth_noise(rng, n, (int(rng.integers(3, 6)),) * 2) + 0.4 * _smooth_noise(rng, n, (10, 10))
    cover = _u(rng, 0.45, 0.72)
    alpha = (np.clip((c - cover) / 0.12, 0, 1) * _u(rng, 0.75, 0.98))[..., None]
    cloud = np.array(_hsv(hue, _u(rng, 0.0, 0.08), _u(rng, 0.88, 1.0)), np.float32)
    shade = 1.0 - 0.12 * np.clip((c - cover) / 0.3, 0, 1)[..., None]
    return img * (1 - alpha) + cloud * shade * alpha


def _grass(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(_hsv(_u(rng, 72, 135), _u(rng, 0.45, 0.85), _u(rng, 0.4, 0.75)), np.float32)
    blades = _smooth_noise(rng, n, (max(2, n // 10), n // 2))  # tall vertical streaks
    patches = _smooth_noise(rng, n, (4, 4))
    grain = rng.normal(0, 0.05, (n, n)).astype(np.float32)
    img = base * (0.55 + 0.55 * blades + 0.25 * (patches - 0.5) + grain)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(n * n // 250):
        x, y = _u(rng, 0, n), _u(rng, 0, n)
        length, lean = _u(rng, 0.03, 0.08) * n, _u(rng, -0.4, 0.4)
        tone = base * _u(rng, 0.55, 1.35)
        draw.line([x, y, x + lean * length, y - length], fill=tuple(int(min(v, 255)) for v in tone), width=1)
    return np.asarray(pil, dtype=np.float32)


def _water(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(_hsv(_u(rng, 180, 222), _u(rng, 0.5, 0.9), _u(rng, 0.45, 0.8)), np.float32)
    y, x = _grid(n)
    f, g = _u(rng, 0.2, 0.45) * 128 / n, _u(rng, 0.04, 0.1) * 128 / n
    warp = 2.5 * _smooth_noise(rng, n, (5, 5))
    waves = np.sin(y * f + _u(rng, 1, 3) * np.sin(x * g + _u(rng, 0, 6.3)) + warp)
    depth = 1.1 - 0.25 * y / n
    img = base * (depth * (0.85 + 0.12 * waves))[..., None]
    glint = np.clip((waves - 0.8) / 0.2, 0, 1)[..., None] * _u(rng, 0.4, 0.8)
    return img * (1 - glint) + (base + (255 - base) * 0.7) * glint


def _sand(rng: np.random.Generator, n: int) -> np.ndarray:
    base = np.array(_hsv(_u(rng, 28, 48), _u(rng, 0.25, 0.55), _u(rng, 0.7, 0.95)), np.float32)
    y, x = _grid(n)
    a = _u(rng, -0.6, 0.6)
    ripple = np.sin((x * math.sin(a) + y * math.cos(a)) * _u(rng, 0.12, 0.25) * 128 / n + 4 * _smooth_noise(rng, n, (4, 4)))
    grain = rng.normal(0, 0.06, (n, n)).astype(np.float32)
    specks = (rng.random((n, n)) < 0.03) * _u(rng, -0.35, -0.15)
    return base * (0.9 + 0.07 * ripple + grain + specks)[..., None]


def _wall(rng: np.random.Generator, n: int) -> np.ndarray:
    bh = max(4, int(n * _u(rng, 0.08, 0.14)))
    bw = int(bh * _u(rng, 1.8, 2.6))
    mortar_w = max(1, bh // 6)
    y, x = np.mgrid[0:n, 0:n]
    y = y + int(rng.integers(bh))
    row = y // bh
    xs = x + (row % 2) * (bw // 2) + int(rng.integers(bw))
    col = xs // bw
    if rng.random() < 0.75:  # red / brown / orange brick
        brick = _hsv(_u(rng, 0, 30), _u(rng, 0.45, 0.8), _u(rng, 0.4, 0.8))
    else:  # grey / sandy stone
        brick = _hsv(_u(rng, 0, 60), _u(rng, 0.0, 0.2), _u(rng, 0.4, 0.8))
    bricks = (row.max() + 1, col.max() + 1)
    jitter = rng.uniform(0.75, 1.15, (*bricks, 1)) * (1 + rng.normal(0, 0.05, (*bricks, 3)))
    img = np.array(brick, np.float32) * jitter[row, col]
    mortar = (y % bh < mortar_w) | (xs % bw < mortar_w)
    img[mortar] = _hsv(_u(rng, 30, 50), _u(rng, 0.03, 0.15), _u(rng, 0.65, 0.9))
    return img * (1 + rng.normal(0, 0.04, (n, n, 1)))


_TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": _sky,
    "grass": _grass,
    "water": _water,
    "sand": _sand,
    "wall": _wall,
}


def render_stuff(rng: np.random.Generator, stuff: str, n: int) -> np.ndarray:
    """Render the named background texture as an (n, n, 3) uint8 array."""
    return np.clip(_TEXTURES[stuff](rng, n), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- thing icons


def _box(s: int, *coords: float) -> list[float]:
    """Scale unit-square coordinates to an s-pixel canvas."""
    return [c * s for c in coords]


def _circle(s: int, cx: float, cy: float, r: float) -> list[float]:
    return _box(s, cx - r, cy - r, cx + r, cy + r)


def _polar(r: float, a: float) -> tuple[float, float]:
    """Unit-square point at radius r and angle a (radians) around the centre."""
    return 0.5 + r * math.cos(a), 0.5 + r * math.sin(a)


def _ow(s: int) -> int:
    return max(1, round(s / 40))


def _blobs(d: ImageDraw.ImageDraw, s: int, circles: Sequence[tuple[float, float, float]], fill: Color) -> None:
    """Union of circles with one merged dark outline."""
    grow = _ow(s) / s
    for cx, cy, r in circles:
        d.ellipse(_circle(s, cx, cy, r + grow), fill=_darker(fill, 0.55))
    for cx, cy, r in circles:
        d.ellipse(_circle(s, cx, cy, r), fill=fill)


def _draw_sun(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    core = _hsv(_u(rng, 42, 56), _u(rng, 0.75, 1.0), _u(rng, 0.92, 1.0))
    ray = _hsv(_u(rng, 22, 48), _u(rng, 0.8, 1.0), _u(rng, 0.88, 1.0))
    n = int(rng.integers(8, 13))
    half, phase, tip = math.pi / n * _u(rng, 0.35, 0.55), _u(rng, 0, math.tau), _u(rng, 0.44, 0.49)
    for k in range(n):
        a = phase + math.tau * k / n
        pts = (*_polar(0.26, a - half), *_polar(tip, a), *_polar(0.26, a + half))
        d.polygon(_box(s, *pts), fill=ray, outline=_darker(ray), width=_ow(s))
    d.ellipse(_circle(s, 0.5, 0.5, 0.3), fill=core, outline=_darker(core, 0.7), width=_ow(s))
    d.ellipse(_circle(s, 0.5, 0.5, 0.2), fill=_lighter(core, 0.35))


def _draw_tree(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    trunk = _hsv(_u(rng, 18, 35), _u(rng, 0.4, 0.7), _u(rng, 0.3, 0.55))
    if rng.random() < 0.2:  # autumn
        leaf = _hsv(_u(rng, 12, 50), _u(rng, 0.7, 0.95), _u(rng, 0.55, 0.9))
    else:
        leaf = _hsv(_u(rng, 80, 150), _u(rng, 0.5, 0.9), _u(rng, 0.35, 0.75))
    if rng.random() < 0.6:  # round crown
        d.polygon(_box(s, 0.44, 0.5, 0.56, 0.5, 0.6, 0.97, 0.4, 0.97), fill=trunk, outline=_darker(trunk), width=_ow(s))
        j = rng.uniform(-0.03, 0.03, (4, 2))
        crown = [(0.5, 0.26, 0.22), (0.3, 0.42, 0.18), (0.7, 0.42, 0.18), (0.5, 0.5, 0.19)]
        _blobs(d, s, [(x + dx, y + dy, r) for (x, y, r), (dx, dy) in zip(crown, j)], leaf)
        for _ in range(4):
            d.ellipse(_circle(s, _u(rng, 0.3, 0.7), _u(rng, 0.25, 0.55), 0.05), fill=_darker(leaf, 0.8))
    else:  # conifer
        d.rectangle(_box(s, 0.45, 0.78, 0.55, 0.98), fill=trunk, outline=_darker(trunk), width=_ow(s))
        for top, bot, half in ((0.4, 0.84, 0.42), (0.2, 0.62, 0.33), (0.02, 0.4, 0.24)):
            d.polygon(_box(s, 0.5, top, 0.5 - half, bot, 0.5 + half, bot), fill=leaf, outline=_darker(leaf), width=_ow(s))


def _draw_house(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    wall = _any_color(rng, (0.15, 0.6), (0.65, 0.98))
    roof = _any_color(rng, (0.4, 0.85), (0.35, 0.7))
    ow = _ow(s)
    if rng.random() < 0.5:
        d.rectangle(_box(s, 0.66, 0.12, 0.76, 0.36), fill=roof, outline=_darker(roof), width=ow)
    d.rectangle(_box(s, 0.18, 0.45, 0.82, 0.96), fill=wall, outline=_darker(wall), width=ow)
    d.polygon(_box(s, 0.08, 0.48, 0.5, 0.08, 0.92, 0.48), fill=roof, outline=_darker(roof), width=ow)
    door = _any_color(rng, (0.3, 0.8), (0.25, 0.6))
    d.rectangle(_box(s, 0.42, 0.66, 0.58, 0.96), fill=door, outline=_darker(door), width=ow)
    glass = _hsv(_u(rng, 40, 210), _u(rng, 0.2, 0.5), _u(rng, 0.85, 1.0))
    for x0 in (0.24, 0.62):
        d.rectangle(_box(s, x0, 0.55, x0 + 0.14, 0.7), fill=glass, outline=_darker(wall, 0.4), width=ow)
        d.line(_box(s, x0 + 0.07, 0.55, x0 + 0.07, 0.7), fill=_darker(wall, 0.4), width=ow)


def _draw_car(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    body = _man_made_color(rng)
    ow, dark = _ow(s), _darker(body, 0.5)
    d.polygon(_box(s, 0.2, 0.47, 0.33, 0.2, 0.68, 0.2, 0.82, 0.47), fill=body, outline=dark, width=ow)
    d.rounded_rectangle(_box(s, 0.03, 0.44, 0.97, 0.76), radius=0.08 * s, fill=body, outline=dark, width=ow)
    glass = _hsv(_u(rng, 185, 215), _u(rng, 0.15, 0.4), _u(rng, 0.75, 0.95))
    d.polygon(_box(s, 0.27, 0.44, 0.36, 0.25, 0.48, 0.25, 0.48, 0.44), fill=glass)
    d.polygon(_box(s, 0.53, 0.44, 0.53, 0.25, 0.66, 0.25, 0.76, 0.44), fill=glass)
    d.ellipse(_box(s, 0.9, 0.5, 0.97, 0.58), fill=(255, 230, 120))
    d.ellipse(_box(s, 0.03, 0.5, 0.07, 0.58), fill=(200, 30, 30))
    for cx in (0.26, 0.74):
        d.ellipse(_circle(s, cx, 0.76, 0.13), fill=(28, 28, 30))
        d.ellipse(_circle(s, cx, 0.76, 0.055), fill=(175, 175, 180))


def _draw_boat(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    hull = _man_made_color(rng)
    sail = _hsv(_u(rng, 0, 360), _u(rng, 0.0, 0.1), _u(rng, 0.9, 1.0)) if rng.random() < 0.65 else _any_color(rng, (0.3, 0.8), (0.75, 1.0))
    ow = _ow(s)
    d.line(_box(s, 0.5, 0.05, 0.5, 0.66), fill=(90, 70, 50), width=max(1, round(0.035 * s)))
    d.polygon(_box(s, 0.54, 0.08, 0.54, 0.6, 0.9, 0.6), fill=sail, outline=_darker(sail), width=ow)
    if rng.random() < 0.6:
        d.polygon(_box(s, 0.46, 0.16, 0.46, 0.6, 0.16, 0.6), fill=sail, outline=_darker(sail), width=ow)
    d.polygon(_box(s, 0.03, 0.62, 0.97, 0.62, 0.8, 0.9, 0.2, 0.9), fill=hull, outline=_darker(hull, 0.5), width=ow)
    d.line(_box(s, 0.08, 0.7, 0.92, 0.7), fill=_lighter(hull, 0.6), width=max(1, round(0.03 * s)))
    for cx in (0.35, 0.5, 0.65):
        d.ellipse(_circle(s, cx, 0.79, 0.03), fill=_darker(hull, 0.4))


def _draw_fish(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    body = _any_color(rng, (0.55, 1.0), (0.55, 1.0))
    fin = _darker(body, 0.75) if rng.random() < 0.6 else _any_color(rng)
    ow, dark = _ow(s), _darker(body, 0.5)
    d.polygon(_box(s, 0.6, 0.5, 0.96, 0.2, 0.86, 0.5, 0.96, 0.8), fill=fin, outline=dark, width=ow)
    d.polygon(_box(s, 0.26, 0.32, 0.42, 0.12, 0.56, 0.33), fill=fin, outline=dark, width=ow)
    d.polygon(_box(s, 0.36, 0.66, 0.44, 0.82, 0.52, 0.66), fill=fin, outline=dark, width=ow)
    d.ellipse(_box(s, 0.05, 0.27, 0.7, 0.73), fill=body, outline=dark, width=ow)
    stripe = _lighter(body, 0.6) if rng.random() < 0.5 else _darker(body, 0.7)
    for x0 in (0.3, 0.42):
        d.arc(_box(s, x0, 0.3, x0 + 0.16, 0.7), -70, 70, fill=stripe, width=max(1, round(0.04 * s)))
    d.arc(_box(s, 0.12, 0.36, 0.28, 0.64), -70, 70, fill=dark, width=ow)
    d.ellipse(_circle(s, 0.18, 0.44, 0.055), fill=(250, 250, 250))
    d.ellipse(_circle(s, 0.17, 0.44, 0.028), fill=(10, 10, 10))


def _draw_flower(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    green = _hsv(_u(rng, 85, 140), _u(rng, 0.5, 0.9), _u(rng, 0.35, 0.7))
    d.line(_box(s, 0.5, 0.45, 0.5, 0.98), fill=green, width=max(1, round(0.05 * s)))
    d.polygon(_box(s, 0.5, 0.8, 0.62, 0.66, 0.84, 0.6, 0.72, 0.76), fill=green, outline=_darker(green), width=_ow(s))
    d.polygon(_box(s, 0.5, 0.9, 0.38, 0.76, 0.18, 0.72, 0.3, 0.86), fill=green, outline=_darker(green), width=_ow(s))
    petal = _any_color(rng, (0.45, 1.0), (0.7, 1.0))
    n, phase, ring = int(rng.integers(5, 9)), _u(rng, 0, math.tau), _u(rng, 0.15, 0.19)
    pr = ring * math.sin(math.pi / n) * 1.35
    _blobs(d, s, [(0.5 + ring * math.cos(phase + math.tau * k / n), 0.34 + ring * math.sin(phase + math.tau * k / n), pr) for k in range(n)], petal)
    centre = _hsv(_u(rng, 20, 55), _u(rng, 0.7, 1.0), _u(rng, 0.4, 1.0))
    d.ellipse(_circle(s, 0.5, 0.34, 0.085), fill=centre, outline=_darker(centre), width=_ow(s))


def _draw_balloon(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = _any_color(rng, (0.55, 1.0), (0.6, 1.0))
    d.line(_box(s, 0.5, 0.74, 0.45, 0.82, 0.55, 0.9, 0.5, 0.99), fill=(110, 110, 110), width=max(1, round(0.015 * s)), joint="curve")
    d.ellipse(_box(s, 0.2, 0.03, 0.8, 0.73), fill=c, outline=_darker(c, 0.55), width=_ow(s))
    d.polygon(_box(s, 0.45, 0.78, 0.55, 0.78, 0.5, 0.71), fill=_darker(c, 0.7))
    d.ellipse(_box(s, 0.3, 0.13, 0.4, 0.3), fill=_lighter(c, 0.6))


def _draw_umbrella(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c1 = _man_made_color(rng)
    c2 = c1 if rng.random() < 0.5 else (_man_made_color(rng) if rng.random() < 0.6 else (245, 245, 245))
    n, ow, dark = int(rng.integers(4, 7)), _ow(s), (40, 40, 45)
    for i in range(n):
        start, end = 180 + 180 * i / n, 180 + 180 * (i + 1) / n
        d.pieslice(_box(s, 0.04, 0.1, 0.96, 0.9), start, end, fill=(c1, c2)[i % 2], outline=_darker(c1, 0.5), width=ow)
    w = 0.92 / n
    for i in range(n):
        box = _box(s, 0.04 + i * w, 0.44, 0.04 + (i + 1) * w, 0.56)
        d.ellipse(box, fill=(0, 0, 0, 0))
        d.arc(box, 180, 360, fill=_darker(c1, 0.5), width=ow)
    stick = max(1, round(0.03 * s))
    d.line(_box(s, 0.5, 0.1, 0.5, 0.03), fill=dark, width=stick)
    d.line(_box(s, 0.5, 0.5, 0.5, 0.84), fill=dark, width=stick)
    d.arc(_box(s, 0.38, 0.78, 0.5, 0.9), 0, 180, fill=dark, width=stick)


def _draw_mushroom(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    kind = rng.random()
    if kind < 0.45:
        cap, spots = _hsv(_u(rng, -8, 12), _u(rng, 0.7, 0.95), _u(rng, 0.65, 0.95)), rng.random() < 0.8
    elif kind < 0.8:
        cap, spots = _hsv(_u(rng, 18, 38), _u(rng, 0.35, 0.7), _u(rng, 0.35, 0.75)), rng.random() < 0.3
    else:
        cap, spots = _any_color(rng), rng.random() < 0.5
    stem = _hsv(_u(rng, 30, 50), _u(rng, 0.05, 0.25), _u(rng, 0.82, 1.0))
    ow = _ow(s)
    d.polygon(_box(s, 0.36, 0.5, 0.64, 0.5, 0.7, 0.96, 0.3, 0.96), fill=stem, outline=_darker(stem), width=ow)
    d.ellipse(_box(s, 0.2, 0.44, 0.8, 0.58), fill=_darker(stem, 0.8))
    d.chord(_box(s, 0.06, 0.08, 0.94, 0.72), 160, 380, fill=cap, outline=_darker(cap, 0.55), width=ow)
    if spots:
        for _ in range(int(rng.integers(3, 6))):
            a, fr = math.radians(_u(rng, 205, 335)), _u(rng, 0.35, 0.75)
            d.ellipse(_circle(s, 0.5 + 0.44 * fr * math.cos(a), 0.4 + 0.32 * fr * math.sin(a), _u(rng, 0.04, 0.07)), fill=(248, 246, 238))


def _draw_bird(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = _any_color(rng, (0.5, 1.0), (0.5, 1.0))
    ow, dark = _ow(s), _darker(c, 0.5)
    leg = _hsv(_u(rng, 20, 45), 0.8, 0.8)
    for x0, x1 in ((0.42, 0.38), (0.52, 0.54)):
        d.line(_box(s, x0, 0.7, x1, 0.92), fill=leg, width=max(1, round(0.025 * s)))
    d.polygon(_box(s, 0.28, 0.52, 0.02, 0.34, 0.07, 0.62), fill=_darker(c, 0.75), outline=dark, width=ow)
    d.ellipse(_box(s, 0.16, 0.34, 0.72, 0.76), fill=c, outline=dark, width=ow)
    d.ellipse(_box(s, 0.3, 0.58, 0.62, 0.74), fill=_lighter(c, 0.45))
    d.polygon(_box(s, 0.82, 0.29, 0.99, 0.36, 0.82, 0.42), fill=_hsv(_u(rng, 28, 50), 0.9, 0.95), outline=(60, 40, 10), width=ow)
    d.ellipse(_circle(s, 0.7, 0.34, 0.15), fill=c, outline=dark, width=ow)
    d.polygon(_box(s, 0.28, 0.48, 0.5, 0.38, 0.62, 0.5, 0.42, 0.64), fill=_darker(c, 0.7), outline=dark, width=ow)
    d.ellipse(_circle(s, 0.75, 0.3, 0.035), fill=(10, 10, 10))


def _draw_cup(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator) -> None:
    c = _man_made_color(rng)
    ow, dark = _ow(s), _darker(c, 0.5)
    if rng.random() < 0.5:
        saucer = _man_made_color(rng)
        d.ellipse(_box(s, 0.04, 0.8, 0.88, 0.97), fill=saucer, outline=_darker(saucer, 0.5), width=ow)
    d.ellipse(_box(s, 0.56, 0.32, 0.92, 0.7), outline=_darker(c, 0.8), width=max(2, round(0.08 * s)))
    d.polygon(_box(s, 0.16, 0.2, 0.76, 0.2, 0.68, 0.88, 0.24, 0.88), fill=c, outline=dark, width=ow)
    d.ellipse(_box(s, 0.16, 0.14, 0.76, 0.27), fill=_darker(c, 0.8), outline=dark, width=ow)
    drink = _hsv(_u(rng, 15, 35), _u(rng, 0.4, 0.8), _u(rng, 0.2, 0.6))
    d.ellipse(_box(s, 0.2, 0.16, 0.72, 0.25), fill=drink)
    if rng.random() < 0.4:
        d.line(_box(s, 0.2, 0.48, 0.72, 0.48), fill=_man_made_color(rng), width=max(1, round(0.06 * s)))


_DRAWERS: dict[str, Drawer] = {
    "sun": _draw_sun,
    "tree": _draw_tree,
    "house": _draw_house,
    "car": _draw_car,
    "boat": _draw_boat,
    "fish": _draw_fish,
    "flower": _draw_flower,
    "balloon": _draw_balloon,
    "umbrella": _draw_umbrella,
    "mushroom": _draw_mushroom,
    "bird": _draw_bird,
    "cup": _draw_cup,
}

THINGS: tuple[str, ...] = tuple(_DRAWERS)
STUFF: tuple[str, ...] = tuple(_TEXTURES)
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "objects": ("background", *THINGS),
    "context": (*THINGS, *STUFF),
}


def _shade(icon: Image.Image) -> Image.Image:
    """Light the icon from the top-left with a soft linear ramp (alpha untouched)."""
    arr = np.asarray(icon).astype(np.float32)
    n = arr.shape[0]
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    gain = 1.15 - 0.35 * (ramp[:, None] + ramp[None, :])
    arr[..., :3] *= gain[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def render_thing(rng: np.random.Generator, thing: str, side: int) -> Image.Image:
    """Draw one thing as a binary-alpha RGBA icon: random palette, mirror and rotation (+-30 deg)."""
    icon = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    _DRAWERS[thing](ImageDraw.Draw(icon), side, rng)
    icon = _shade(icon)
    if rng.random() < 0.5:
        icon = icon.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    icon = icon.rotate(_u(rng, -30, 30), resample=Image.Resampling.NEAREST, expand=True)
    return icon.crop(icon.getchannel("A").getbbox())


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Scene:
    """One rendered image with its background name, drawn things and label maps."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    stuff: str  # background texture name
    things: tuple[str, ...]  # drawn back to front, 1..4 distinct categories
    masks: dict[str, np.ndarray]  # label set name -> (H, W) uint8 indices into LABEL_SETS[name]


MIN_IN_FRAME = 0.7  # a new thing keeps >= 70% of its pixels inside the image
MIN_VISIBLE = 0.4  # earlier things keep >= 40% of their pixels visible
PLACE_TRIES = 8
THING_COUNT_P = (0.25, 0.3, 0.25, 0.2)  # P(1..4 things)


def _canvas_mask(alpha: np.ndarray, x0: int, y0: int, n: int) -> np.ndarray:
    """Place a boolean icon mask with top-left (x0, y0) on an (n, n) canvas, clipping at the borders."""
    out = np.zeros((n, n), bool)
    h, w = alpha.shape
    ya, yb, xa, xb = max(0, y0), min(n, y0 + h), max(0, x0), min(n, x0 + w)
    if ya < yb and xa < xb:
        out[ya:yb, xa:xb] = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


def _find_spot(rng: np.random.Generator, alpha: np.ndarray, owner: np.ndarray, areas: dict[int, int]) -> tuple[int, int, np.ndarray] | None:
    """Sample a position keeping the new thing mostly in frame and earlier ones mostly visible."""
    n = owner.shape[0]
    h, w = alpha.shape
    full = np.count_nonzero(alpha)
    for _ in range(PLACE_TRIES):
        x0 = round(_u(rng, 0.1, 0.9) * n - w / 2)
        y0 = round(_u(rng, 0.1, 0.9) * n - h / 2)
        mask = _canvas_mask(alpha, x0, y0, n)
        if np.count_nonzero(mask) < MIN_IN_FRAME * full:
            continue
        if all(np.count_nonzero((owner == k) & ~mask) >= MIN_VISIBLE * a for k, a in areas.items()):
            return x0, y0, mask
    if not areas:  # the first thing always fits at the centre
        x0, y0 = (n - w) // 2, (n - h) // 2
        return x0, y0, _canvas_mask(alpha, x0, y0, n)
    return None


def _reduce_labels(labels: np.ndarray) -> np.ndarray:
    """2x label map -> 1x; blocks holding more than one label become IGNORE_INDEX."""
    first = labels[0::2, 0::2]
    same = (first == labels[1::2, 0::2]) & (first == labels[0::2, 1::2]) & (first == labels[1::2, 1::2])
    return np.where(same, first, IGNORE_INDEX).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int = 64) -> Scene:
    """Render one scene (image, stuff, things back to front, label maps) at `size` px."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} px, got {size}")
    n = 2 * size
    stuff = STUFF[int(rng.integers(len(STUFF)))]
    canvas = Image.fromarray(render_stuff(rng, stuff, n))
    owner = np.full((n, n), -1, np.int16)  # THINGS index of the visible thing, -1 = stuff
    areas: dict[int, int] = {}
    count = int(rng.choice(len(THING_COUNT_P), p=THING_COUNT_P)) + 1
    for k in rng.choice(len(THINGS), size=count, replace=False):
        icon = render_thing(rng, THINGS[k], round(_u(rng, 0.2, 0.6) * n))
        spot = _find_spot(rng, np.asarray(icon.getchannel("A")) > 0, owner, areas)
        if spot is None:
            continue
        x0, y0, mask = spot
        canvas.paste(icon, (x0, y0), icon)
        owner[mask] = k
        areas[int(k)] = np.count_nonzero(mask)
    image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    stuff_context = len(THINGS) + STUFF.index(stuff)
    masks = {
        "objects": _reduce_labels((owner + 1).astype(np.uint8)),
        "context": _reduce_labels(np.where(owner >= 0, owner, stuff_context).astype(np.uint8)),
    }
    return Scene(image=image, stuff=stuff, things=tuple(THINGS[k] for k in areas), masks=masks)


def make_caption(rng: np.random.Generator, scene: Scene) -> str:
    """Noisy web-style caption for a scene (see mixreorg_edge.data.captions)."""
    return caption_for(rng, scene.things, scene.stuff)


# ----------------------------------------------------------------------------- dataset writing


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent RNG stream for one image, keyed by (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))


def make_sample(seed: int, split: str, index: int, size: int) -> tuple[Scene, str]:
    """Render the scene and caption of image `index` in `split`."""
    rng = sample_rng(seed, split, index)
    scene = render_scene(rng, size)
    return scene, make_caption(rng, scene)


def _key(index: int) -> str:
    return f"{index:08d}"


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


@dataclass(frozen=True)
class _Task:
    out: Path
    split: str
    seed: int
    size: int
    start: int
    stop: int
    shard: int


def _write_train_shard(task: _Task) -> list[tuple[str, str]]:
    path = task.out / "train" / f"shard-{task.shard:06d}.tar"
    with wds.TarWriter(str(path), encoder=False, mtime=0) as sink:
        for i in range(task.start, task.stop):
            scene, caption = make_sample(task.seed, "train", i, task.size)
            sink.write({"__key__": _key(i), "jpg": _jpeg(scene.image), "txt": caption.encode("utf-8")})
    return []


def _write_val_chunk(task: _Task) -> list[tuple[str, str]]:
    val = task.out / "val"
    captions = []
    for i in range(task.start, task.stop):
        scene, caption = make_sample(task.seed, "val", i, task.size)
        key = _key(i)
        (val / "images" / f"{key}.jpg").write_bytes(_jpeg(scene.image))
        for name, mask in scene.masks.items():
            Image.fromarray(mask).save(val / "masks" / name / f"{key}.png")
        captions.append((key, caption))
    return captions


def _run_task(task: _Task) -> list[tuple[str, str]]:
    return _write_train_shard(task) if task.split == "train" else _write_val_chunk(task)


def _tasks(out: Path, train: int, val: int, size: int, seed: int, shard_size: int) -> list[_Task]:
    tasks = [_Task(out, "train", seed, size, s, min(s + shard_size, train), k) for k, s in enumerate(range(0, train, shard_size))]
    tasks += [_Task(out, "val", seed, size, s, min(s + VAL_CHUNK, val), k) for k, s in enumerate(range(0, val, VAL_CHUNK))]
    return tasks


def _validate(train: int, val: int, size: int, seed: int, shard_size: int, workers: int) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} px, got {size}")
    if train < 0 or val < 0:
        raise ValueError(f"image counts must be >= 0, got train={train}, val={val}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _prepare_dirs(out: Path) -> None:
    """Create the layout and remove files a previous run may have left (stale shards/images)."""
    for sub in ("train", "val/images", *(f"val/masks/{name}" for name in LABEL_SETS)):
        (out / sub).mkdir(parents=True, exist_ok=True)
    stale = [*(out / "train").glob("shard-*.tar"), *(out / "val/images").glob("*.jpg"), *(out / "val/masks").glob("*/*.png")]
    for path in stale:
        path.unlink()


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_synthetic_world(out: Path, train: int, val: int, size: int = 64, seed: int = 0, shard_size: int = 1000, workers: int | None = None) -> dict:
    """Write train WebDataset shards (jpg+txt only) and a val split with masks; return a summary."""
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    _validate(train, val, size, seed, shard_size, workers)
    out = Path(out)
    t0 = time.perf_counter()
    _prepare_dirs(out)
    tasks = _tasks(out, train, val, size, seed, shard_size)
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.Pool(min(workers, len(tasks))) as pool:
            results = pool.map(_run_task, tasks, chunksize=1)
    else:
        results = [_run_task(t) for t in tasks]
    with (out / "val" / "captions.jsonl").open("w", encoding="utf-8") as f:
        for key, caption in (kc for r in results for kc in r):
            f.write(json.dumps({"key": key, "caption": caption}) + "\n")
    _write_json(out / "val" / "classes.json", {
        "label_sets": {k: list(v) for k, v in LABEL_SETS.items()},
        "background_words": {"objects": list(STUFF)},
        "ignore_index": IGNORE_INDEX,
    })
    _write_json(out / "world.json", {
        "generator": GENERATOR, "version": VERSION, "seed": seed, "size": size,
        "counts": {"train": train, "val": val}, "shard_size": shard_size,
        "things": list(THINGS), "stuff": list(STUFF),
    })
    shards = sorted(str(p) for p in (out / "train").glob("shard-*.tar"))
    return {"out": str(out), "train": train, "val": val, "size": size, "seed": seed,
            "train_shards": shards, "val_dir": str(out / "val"), "seconds": round(time.perf_counter() - t0, 3)}
