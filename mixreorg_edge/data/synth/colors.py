"""Random colour helpers shared by the stuff textures and the thing icons."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw from U[lo, hi) as a Python float."""
    return float(rng.uniform(lo, hi))


def hsv(h: float, s: float, v: float) -> Color:
    """Hue in degrees, saturation and value in [0, 1] -> RGB bytes."""
    r, g, b = colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def darker(c: Color, f: float = 0.6) -> Color:
    return int(c[0] * f), int(c[1] * f), int(c[2] * f)


def lighter(c: Color, f: float = 0.5) -> Color:
    r, g, b = (int(v + (255 - v) * f) for v in c)
    return r, g, b


HUE_SPREAD = 12.0  # degrees either side of a thing's own hue, with by-class thing colours


@dataclass(frozen=True)
class Palette:
    """Where an icon's free colours come from: any hue (`hue` None, so colour alone never names the thing), or
    within +-HUE_SPREAD degrees of a hue of the thing's own (so colour names it, as yellow names the sun)."""

    hue: float | None = None

    def any(self, rng: np.random.Generator, sat: tuple[float, float] = (0.5, 1.0), val: tuple[float, float] = (0.5, 1.0)) -> Color:
        hue = uniform(rng, 0, 360) if self.hue is None else self.hue + uniform(rng, -HUE_SPREAD, HUE_SPREAD)
        return hsv(hue, uniform(rng, *sat), uniform(rng, *val))

    def man_made(self, rng: np.random.Generator) -> Color:
        """A saturated colour, or (15%, free hues only) a grey from near-black to near-white."""
        if self.hue is None and rng.random() < 0.15:
            v = round(uniform(rng, 0.15, 0.95) * 255)
            return v, v, v
        return self.any(rng, (0.45, 1.0), (0.45, 1.0))
