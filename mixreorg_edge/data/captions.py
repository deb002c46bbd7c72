"""Web-style caption text for the synthetic caption world.

Captions name the drawn things (in random order, with correct English joining and
articles) and, about half the time, the background ("stuff"). They are noisy like
web alt-text: sometimes one of several things is left out. No left/right words are
used because training images are flipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Templates that only name things.
THING_TEMPLATES: tuple[str, ...] = (
    "a photo of {things}.",
    "a picture of {things}.",
    "an image of {things}.",
    "{things}.",
    "look at {things}!",
    "my favourite picture of {things}.",
    "a drawing of {things}.",
    "a cartoon of {things}.",
    "an illustration of {things}.",
    "a close-up photo of {things}.",
    "a cute illustration of {things}.",
    "this is {things}.",
    "here we have {things}.",
    "found {things} today",
    "{things} in a simple cartoon style",
    "clipart of {things}",
    "a bright and colourful picture of {things}.",
    "a photo showing {things}.",
    "stock image: {things}",
    "i love this shot of {things}!",
    "a low resolution photo of {things}.",
)

# Templates that also name the background, via a phrase ({where}) or a noun phrase ({scene}).
STUFF_TEMPLATES: tuple[str, ...] = (
    "a photo of {things} {where}.",
    "{things} {where}.",
    "there is {things} {where}.",
    "a picture of {things} {where}.",
    "a drawing of {things} {where}.",
    "look at {things} {where}!",
    "my favourite picture of {things} {where}.",
    "an illustration of {things} {where}.",
    "we saw {things} {where}.",
    "a snapshot of {things} {where}.",
    "a cartoon of {things} {where}",
    "{scene} with {things}.",
    "a view of {scene} with {things}.",
    "{scene} behind {things}",
)

TEMPLATES: tuple[str, ...] = THING_TEMPLATES + STUFF_TEMPLATES

# Per background: prepositional phrases and noun phrases; each contains the canonical name.
WHERE_PHRASES: dict[str, tuple[str, ...]] = {
    "sky": ("in the sky", "against the blue sky", "under a cloudy sky", "in a clear sky"),
    "grass": ("on the grass", "on green grass", "in the grass", "on a field of grass"),
    "water": ("on the water", "in the water", "over blue water", "on calm water"),
    "sand": ("on the sand", "in the sand", "on golden sand", "on the beach sand"),
    "wall": ("in front of a brick wall", "against a brick wall", "by the wall", "in front of an old wall"),
}
SCENE_PHRASES: dict[str, tuple[str, ...]] = {
    "sky": ("the sky", "a blue sky", "a cloudy sky"),
    "grass": ("green grass", "a field of grass", "the grass"),
    "water": ("blue water", "the water", "calm water"),
    "sand": ("the sand", "warm sand", "golden sand"),
    "wall": ("a brick wall", "an old wall", "the wall"),
}

DROP_THING_P = 0.15
NAME_STUFF_P = 0.5


def with_article(noun: str) -> str:
    """Return the noun with its indefinite article ("a car", "an umbrella")."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def join_things(nouns: Sequence[str]) -> str:
    """Join nouns as English: "a car", "a car and a fish", "a car, a fish and a sun"."""
    if not nouns:
        raise ValueError("join_things needs at least one noun")
    parts = [with_article(n) for n in nouns]
    if len(parts) == 1:
        return parts[0]
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def caption_for(rng: np.random.Generator, things: Sequence[str], stuff: str) -> str:
    """Make one noisy caption naming (most of) `things` and maybe the background `stuff`."""
    if stuff not in WHERE_PHRASES:
        raise ValueError(f"unknown stuff {stuff!r}; expected one of {sorted(WHERE_PHRASES)}")
    named = [things[i] for i in rng.permutation(len(things))]
    if len(named) > 1 and rng.random() < DROP_THING_P:
        named.pop(int(rng.integers(len(named))))
    if rng.random() < NAME_STUFF_P:
        template = _pick(rng, STUFF_TEMPLATES)
    else:
        template = _pick(rng, THING_TEMPLATES)
    return template.format(
        things=join_things(named),
        where=_pick(rng, WHERE_PHRASES[stuff]),
        scene=_pick(rng, SCENE_PHRASES[stuff]),
    )
