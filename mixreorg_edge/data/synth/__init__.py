"""Deterministic procedural "synthetic caption world".

Stands in for CC12M (image-caption pairs for training) and PASCAL VOC / Context
(segmentation evaluation). Modules: `colors` (random colour helpers), `textures`
(background "stuff"), `icons` ("things"), `scene` (composition, label maps, captions)
and `writer` (shards, val folder, world.json).
"""

from .icons import DEFAULT_THING_COLOURS, THING_COLOURS, THINGS, render_thing
from .scene import IGNORE_INDEX, LABEL_SETS, MIN_SIZE, Scene, make_caption, render_scene
from .textures import STUFF, render_stuff
from .writer import GENERATOR, VERSION, make_sample, sample_rng, write_synthetic_world

__all__ = [
    "DEFAULT_THING_COLOURS",
    "GENERATOR",
    "IGNORE_INDEX",
    "LABEL_SETS",
    "MIN_SIZE",
    "STUFF",
    "THINGS",
    "THING_COLOURS",
    "VERSION",
    "Scene",
    "make_caption",
    "make_sample",
    "render_scene",
    "render_stuff",
    "render_thing",
    "sample_rng",
    "write_synthetic_world",
]
