"""Procedural thing icons.

Every thing is recognisable by its shape and by a characteristic but varied appearance. By default ("by-class"
thing colours) each class draws its free colours from a hue band of its own, as real objects have typical colours.
With "free" thing colours most classes draw them from any hue, so only shape names them (colour names only the few
whose colour is fixed, sun and tree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .colors import Color, Palette, darker, hsv, lighter, uniform

Drawer = Callable[[ImageDraw.ImageDraw, int, np.random.Generator, Palette], None]


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
        d.ellipse(_circle(s, cx, cy, r + grow), fill=darker(fill, 0.55))
    for cx, cy, r in circles:
        d.ellipse(_circle(s, cx, cy, r), fill=fill)


def _draw_sun(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    core = hsv(uniform(rng, 42, 56), uniform(rng, 0.75, 1.0), uniform(rng, 0.92, 1.0))
    ray = hsv(uniform(rng, 22, 48), uniform(rng, 0.8, 1.0), uniform(rng, 0.88, 1.0))
    n = int(rng.integers(8, 13))
    half, phase, tip = math.pi / n * uniform(rng, 0.35, 0.55), uniform(rng, 0, math.tau), uniform(rng, 0.44, 0.49)
    for k in range(n):
        a = phase + math.tau * k / n
        pts = (*_polar(0.26, a - half), *_polar(tip, a), *_polar(0.26, a + half))
        d.polygon(_box(s, *pts), fill=ray, outline=darker(ray), width=_ow(s))
    d.ellipse(_circle(s, 0.5, 0.5, 0.3), fill=core, outline=darker(core, 0.7), width=_ow(s))
    d.ellipse(_circle(s, 0.5, 0.5, 0.2), fill=lighter(core, 0.35))


def _draw_tree(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    trunk = hsv(uniform(rng, 18, 35), uniform(rng, 0.4, 0.7), uniform(rng, 0.3, 0.55))
    if rng.random() < 0.2:  # autumn
        leaf = hsv(uniform(rng, 12, 50), uniform(rng, 0.7, 0.95), uniform(rng, 0.55, 0.9))
    else:
        leaf = hsv(uniform(rng, 80, 150), uniform(rng, 0.5, 0.9), uniform(rng, 0.35, 0.75))
    if rng.random() < 0.6:  # round crown
        d.polygon(_box(s, 0.44, 0.5, 0.56, 0.5, 0.6, 0.97, 0.4, 0.97), fill=trunk, outline=darker(trunk), width=_ow(s))
        j = rng.uniform(-0.03, 0.03, (4, 2))
        crown = [(0.5, 0.26, 0.22), (0.3, 0.42, 0.18), (0.7, 0.42, 0.18), (0.5, 0.5, 0.19)]
        _blobs(d, s, [(x + dx, y + dy, r) for (x, y, r), (dx, dy) in zip(crown, j)], leaf)
        for _ in range(4):
            d.ellipse(_circle(s, uniform(rng, 0.3, 0.7), uniform(rng, 0.25, 0.55), 0.05), fill=darker(leaf, 0.8))
    else:  # conifer
        d.rectangle(_box(s, 0.45, 0.78, 0.55, 0.98), fill=trunk, outline=darker(trunk), width=_ow(s))
        for top, bot, half in ((0.4, 0.84, 0.42), (0.2, 0.62, 0.33), (0.02, 0.4, 0.24)):
            d.polygon(_box(s, 0.5, top, 0.5 - half, bot, 0.5 + half, bot), fill=leaf, outline=darker(leaf), width=_ow(s))


def _draw_house(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    wall = palette.any(rng, (0.15, 0.6), (0.65, 0.98))
    roof = palette.any(rng, (0.4, 0.85), (0.35, 0.7))
    ow = _ow(s)
    if rng.random() < 0.5:
        d.rectangle(_box(s, 0.66, 0.12, 0.76, 0.36), fill=roof, outline=darker(roof), width=ow)
    d.rectangle(_box(s, 0.18, 0.45, 0.82, 0.96), fill=wall, outline=darker(wall), width=ow)
    d.polygon(_box(s, 0.08, 0.48, 0.5, 0.08, 0.92, 0.48), fill=roof, outline=darker(roof), width=ow)
    door = palette.any(rng, (0.3, 0.8), (0.25, 0.6))
    d.rectangle(_box(s, 0.42, 0.66, 0.58, 0.96), fill=door, outline=darker(door), width=ow)
    glass = hsv(uniform(rng, 40, 210), uniform(rng, 0.2, 0.5), uniform(rng, 0.85, 1.0))
    for x0 in (0.24, 0.62):
        d.rectangle(_box(s, x0, 0.55, x0 + 0.14, 0.7), fill=glass, outline=darker(wall, 0.4), width=ow)
        d.line(_box(s, x0 + 0.07, 0.55, x0 + 0.07, 0.7), fill=darker(wall, 0.4), width=ow)


def _draw_car(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    body = palette.man_made(rng)
    ow, dark = _ow(s), darker(body, 0.5)
    d.polygon(_box(s, 0.2, 0.47, 0.33, 0.2, 0.68, 0.2, 0.82, 0.47), fill=body, outline=dark, width=ow)
    d.rounded_rectangle(_box(s, 0.03, 0.44, 0.97, 0.76), radius=0.08 * s, fill=body, outline=dark, width=ow)
    glass = hsv(uniform(rng, 185, 215), uniform(rng, 0.15, 0.4), uniform(rng, 0.75, 0.95))
    d.polygon(_box(s, 0.27, 0.44, 0.36, 0.25, 0.48, 0.25, 0.48, 0.44), fill=glass)
    d.polygon(_box(s, 0.53, 0.44, 0.53, 0.25, 0.66, 0.25, 0.76, 0.44), fill=glass)
    d.ellipse(_box(s, 0.9, 0.5, 0.97, 0.58), fill=(255, 230, 120))
    d.ellipse(_box(s, 0.03, 0.5, 0.07, 0.58), fill=(200, 30, 30))
    for cx in (0.26, 0.74):
        d.ellipse(_circle(s, cx, 0.76, 0.13), fill=(28, 28, 30))
        d.ellipse(_circle(s, cx, 0.76, 0.055), fill=(175, 175, 180))


def _draw_boat(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    hull = palette.man_made(rng)
    sail = hsv(uniform(rng, 0, 360), uniform(rng, 0.0, 0.1), uniform(rng, 0.9, 1.0)) if rng.random() < 0.65 else palette.any(rng, (0.3, 0.8), (0.75, 1.0))
    ow = _ow(s)
    d.line(_box(s, 0.5, 0.05, 0.5, 0.66), fill=(90, 70, 50), width=max(1, round(0.035 * s)))
    d.polygon(_box(s, 0.54, 0.08, 0.54, 0.6, 0.9, 0.6), fill=sail, outline=darker(sail), width=ow)
    if rng.random() < 0.6:
        d.polygon(_box(s, 0.46, 0.16, 0.46, 0.6, 0.16, 0.6), fill=sail, outline=darker(sail), width=ow)
    d.polygon(_box(s, 0.03, 0.62, 0.97, 0.62, 0.8, 0.9, 0.2, 0.9), fill=hull, outline=darker(hull, 0.5), width=ow)
    d.line(_box(s, 0.08, 0.7, 0.92, 0.7), fill=lighter(hull, 0.6), width=max(1, round(0.03 * s)))
    for cx in (0.35, 0.5, 0.65):
        d.ellipse(_circle(s, cx, 0.79, 0.03), fill=darker(hull, 0.4))


def _draw_fish(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    body = palette.any(rng, (0.55, 1.0), (0.55, 1.0))
    fin = darker(body, 0.75) if rng.random() < 0.6 else palette.any(rng)
    ow, dark = _ow(s), darker(body, 0.5)
    d.polygon(_box(s, 0.6, 0.5, 0.96, 0.2, 0.86, 0.5, 0.96, 0.8), fill=fin, outline=dark, width=ow)
    d.polygon(_box(s, 0.26, 0.32, 0.42, 0.12, 0.56, 0.33), fill=fin, outline=dark, width=ow)
    d.polygon(_box(s, 0.36, 0.66, 0.44, 0.82, 0.52, 0.66), fill=fin, outline=dark, width=ow)
    d.ellipse(_box(s, 0.05, 0.27, 0.7, 0.73), fill=body, outline=dark, width=ow)
    stripe = lighter(body, 0.6) if rng.random() < 0.5 else darker(body, 0.7)
    for x0 in (0.3, 0.42):
        d.arc(_box(s, x0, 0.3, x0 + 0.16, 0.7), -70, 70, fill=stripe, width=max(1, round(0.04 * s)))
    d.arc(_box(s, 0.12, 0.36, 0.28, 0.64), -70, 70, fill=dark, width=ow)
    d.ellipse(_circle(s, 0.18, 0.44, 0.055), fill=(250, 250, 250))
    d.ellipse(_circle(s, 0.17, 0.44, 0.028), fill=(10, 10, 10))


def _draw_flower(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    green = hsv(uniform(rng, 85, 140), uniform(rng, 0.5, 0.9), uniform(rng, 0.35, 0.7))
    d.line(_box(s, 0.5, 0.45, 0.5, 0.98), fill=green, width=max(1, round(0.05 * s)))
    d.polygon(_box(s, 0.5, 0.8, 0.62, 0.66, 0.84, 0.6, 0.72, 0.76), fill=green, outline=darker(green), width=_ow(s))
    d.polygon(_box(s, 0.5, 0.9, 0.38, 0.76, 0.18, 0.72, 0.3, 0.86), fill=green, outline=darker(green), width=_ow(s))
    petal = palette.any(rng, (0.45, 1.0), (0.7, 1.0))
    n, phase, ring = int(rng.integers(5, 9)), uniform(rng, 0, math.tau), uniform(rng, 0.15, 0.19)
    pr = ring * math.sin(math.pi / n) * 1.35
    _blobs(d, s, [(0.5 + ring * math.cos(phase + math.tau * k / n), 0.34 + ring * math.sin(phase + math.tau * k / n), pr) for k in range(n)], petal)
    centre = hsv(uniform(rng, 20, 55), uniform(rng, 0.7, 1.0), uniform(rng, 0.4, 1.0))
    d.ellipse(_circle(s, 0.5, 0.34, 0.085), fill=centre, outline=darker(centre), width=_ow(s))


def _draw_balloon(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    c = palette.any(rng, (0.55, 1.0), (0.6, 1.0))
    d.line(_box(s, 0.5, 0.74, 0.45, 0.82, 0.55, 0.9, 0.5, 0.99), fill=(110, 110, 110), width=max(1, round(0.015 * s)), joint="curve")
    d.ellipse(_box(s, 0.2, 0.03, 0.8, 0.73), fill=c, outline=darker(c, 0.55), width=_ow(s))
    d.polygon(_box(s, 0.45, 0.78, 0.55, 0.78, 0.5, 0.71), fill=darker(c, 0.7))
    d.ellipse(_box(s, 0.3, 0.13, 0.4, 0.3), fill=lighter(c, 0.6))


def _draw_umbrella(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    c1 = palette.man_made(rng)
    c2 = c1 if rng.random() < 0.5 else (palette.man_made(rng) if rng.random() < 0.6 else (245, 245, 245))
    n, ow, dark = int(rng.integers(4, 7)), _ow(s), (40, 40, 45)
    for i in range(n):
        start, end = 180 + 180 * i / n, 180 + 180 * (i + 1) / n
        d.pieslice(_box(s, 0.04, 0.1, 0.96, 0.9), start, end, fill=(c1, c2)[i % 2], outline=darker(c1, 0.5), width=ow)
    w = 0.92 / n
    for i in range(n):
        box = _box(s, 0.04 + i * w, 0.44, 0.04 + (i + 1) * w, 0.56)
        d.ellipse(box, fill=(0, 0, 0, 0))
        d.arc(box, 180, 360, fill=darker(c1, 0.5), width=ow)
    stick = max(1, round(0.03 * s))
    d.line(_box(s, 0.5, 0.1, 0.5, 0.03), fill=dark, width=stick)
    d.line(_box(s, 0.5, 0.5, 0.5, 0.84), fill=dark, width=stick)
    d.arc(_box(s, 0.38, 0.78, 0.5, 0.9), 0, 180, fill=dark, width=stick)


def _draw_mushroom(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    kind = rng.random()
    if kind < 0.45:
        cap, spots = hsv(uniform(rng, -8, 12), uniform(rng, 0.7, 0.95), uniform(rng, 0.65, 0.95)), rng.random() < 0.8
    elif kind < 0.8:
        cap, spots = hsv(uniform(rng, 18, 38), uniform(rng, 0.35, 0.7), uniform(rng, 0.35, 0.75)), rng.random() < 0.3
    else:
        cap, spots = palette.any(rng), rng.random() < 0.5
    stem = hsv(uniform(rng, 30, 50), uniform(rng, 0.05, 0.25), uniform(rng, 0.82, 1.0))
    ow = _ow(s)
    d.polygon(_box(s, 0.36, 0.5, 0.64, 0.5, 0.7, 0.96, 0.3, 0.96), fill=stem, outline=darker(stem), width=ow)
    d.ellipse(_box(s, 0.2, 0.44, 0.8, 0.58), fill=darker(stem, 0.8))
    d.chord(_box(s, 0.06, 0.08, 0.94, 0.72), 160, 380, fill=cap, outline=darker(cap, 0.55), width=ow)
    if spots:
        for _ in range(int(rng.integers(3, 6))):
            a, fr = math.radians(uniform(rng, 205, 335)), uniform(rng, 0.35, 0.75)
            d.ellipse(_circle(s, 0.5 + 0.44 * fr * math.cos(a), 0.4 + 0.32 * fr * math.sin(a), uniform(rng, 0.04, 0.07)), fill=(248, 246, 238))


def _draw_bird(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    c = palette.any(rng, (0.5, 1.0), (0.5, 1.0))
    ow, dark = _ow(s), darker(c, 0.5)
    leg = hsv(uniform(rng, 20, 45), 0.8, 0.8)
    for x0, x1 in ((0.42, 0.38), (0.52, 0.54)):
        d.line(_box(s, x0, 0.7, x1, 0.92), fill=leg, width=max(1, round(0.025 * s)))
    d.polygon(_box(s, 0.28, 0.52, 0.02, 0.34, 0.07, 0.62), fill=darker(c, 0.75), outline=dark, width=ow)
    d.ellipse(_box(s, 0.16, 0.34, 0.72, 0.76), fill=c, outline=dark, width=ow)
    d.ellipse(_box(s, 0.3, 0.58, 0.62, 0.74), fill=lighter(c, 0.45))
    d.polygon(_box(s, 0.82, 0.29, 0.99, 0.36, 0.82, 0.42), fill=hsv(uniform(rng, 28, 50), 0.9, 0.95), outline=(60, 40, 10), width=ow)
    d.ellipse(_circle(s, 0.7, 0.34, 0.15), fill=c, outline=dark, width=ow)
    d.polygon(_box(s, 0.28, 0.48, 0.5, 0.38, 0.62, 0.5, 0.42, 0.64), fill=darker(c, 0.7), outline=dark, width=ow)
    d.ellipse(_circle(s, 0.75, 0.3, 0.035), fill=(10, 10, 10))


def _draw_cup(d: ImageDraw.ImageDraw, s: int, rng: np.random.Generator, palette: Palette) -> None:
    c = palette.man_made(rng)
    ow, dark = _ow(s), darker(c, 0.5)
    if rng.random() < 0.5:
        saucer = palette.man_made(rng)
        d.ellipse(_box(s, 0.04, 0.8, 0.88, 0.97), fill=saucer, outline=darker(saucer, 0.5), width=ow)
    d.ellipse(_box(s, 0.56, 0.32, 0.92, 0.7), outline=darker(c, 0.8), width=max(2, round(0.08 * s)))
    d.polygon(_box(s, 0.16, 0.2, 0.76, 0.2, 0.68, 0.88, 0.24, 0.88), fill=c, outline=dark, width=ow)
    d.ellipse(_box(s, 0.16, 0.14, 0.76, 0.27), fill=darker(c, 0.8), outline=dark, width=ow)
    drink = hsv(uniform(rng, 15, 35), uniform(rng, 0.4, 0.8), uniform(rng, 0.2, 0.6))
    d.ellipse(_box(s, 0.2, 0.16, 0.72, 0.25), fill=drink)
    if rng.random() < 0.4:
        d.line(_box(s, 0.2, 0.48, 0.72, 0.48), fill=palette.man_made(rng), width=max(1, round(0.06 * s)))


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
THING_COLOURS = ("free", "by-class")
DEFAULT_THING_COLOURS = "by-class"


def check_thing_colours(thing_colours: str) -> None:
    """Refuse a `thing_colours` value other than those of THING_COLOURS."""
    if thing_colours not in THING_COLOURS:
        raise ValueError(f"unknown thing colours {thing_colours!r}; choose one of: {', '.join(THING_COLOURS)}")


def thing_palette(thing: str, thing_colours: str) -> Palette:
    """The palette `thing` draws its free colours from: any hue ("free"), or its own hue band ("by-class": the
    classes' hues evenly spaced around the colour wheel, in THINGS order)."""
    check_thing_colours(thing_colours)
    if thing_colours == "free":
        return Palette()
    return Palette(hue=360 * THINGS.index(thing) / len(THINGS))


def _shade(icon: Image.Image) -> Image.Image:
    """Light the icon from the top-left with a soft linear ramp (alpha untouched)."""
    arr = np.asarray(icon).astype(np.float32)
    n = arr.shape[0]
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    gain = 1.15 - 0.35 * (ramp[:, None] + ramp[None, :])
    arr[..., :3] *= gain[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def render_thing(
    rng: np.random.Generator, thing: str, side: int, thing_colours: str = DEFAULT_THING_COLOURS
) -> Image.Image:
    """Draw one thing as a binary-alpha RGBA icon: random colours (see `thing_palette`), mirror and rotation
    (+-30 deg)."""
    icon = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    _DRAWERS[thing](ImageDraw.Draw(icon), side, rng, thing_palette(thing, thing_colours))
    icon = _shade(icon)
    if rng.random() < 0.5:
        icon = icon.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    icon = icon.rotate(uniform(rng, -30, 30), resample=Image.Resampling.NEAREST, expand=True)
    return icon.crop(icon.getchannel("A").getbbox())
