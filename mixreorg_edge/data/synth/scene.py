"""Scene composition and label maps.

Every image is one procedural background texture ("stuff") with 1-4 distinct procedural
icons ("things") pasted on top. Images are rendered at 2x and box-downsampled; label maps
are built at 2x and a final pixel is IGNORE_INDEX when its 2x2 block holds more than one
label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..captions import caption_for
from .colors import uniform
from .icons import DEFAULT_THING_COLOURS, THINGS, render_thing
from .textures import STUFF, render_stuff

IGNORE_INDEX = 255
MIN_SIZE = 32
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "objects": ("background", *THINGS),
    "context": (*THINGS, *STUFF),
}


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
        x0 = round(uniform(rng, 0.1, 0.9) * n - w / 2)
        y0 = round(uniform(rng, 0.1, 0.9) * n - h / 2)
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


def render_scene(rng: np.random.Generator, size: int = 64, thing_colours: str = DEFAULT_THING_COLOURS) -> Scene:
    """Render one scene (image, stuff, things back to front, label maps) at `size` px; `thing_colours`: see
    `icons.thing_palette`."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} px, got {size}")
    n = 2 * size
    stuff = STUFF[int(rng.integers(len(STUFF)))]
    canvas = Image.fromarray(render_stuff(rng, stuff, n))
    owner = np.full((n, n), -1, np.int16)  # THINGS index of the visible thing, -1 = stuff
    areas: dict[int, int] = {}
    count = int(rng.choice(len(THING_COUNT_P), p=THING_COUNT_P)) + 1
    for k in rng.choice(len(THINGS), size=count, replace=False):
        icon = render_thing(rng, THINGS[k], round(uniform(rng, 0.2, 0.6) * n), thing_colours)
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
