"""What a teacher's text encoder has read: the words of its training captions, recorded with the run by
`train-teacher` (RUN/caption_vocabulary.json), and the class names with a word it never read. Such a name's
embedding is the text encoder's guess from its letters: the class rarely wins, whatever the image shows (the shipped
teacher read captions of 12 synthetic icons; "person" or "cat" mean nothing to it).

A student's teacher is the one its config.json records. Runs trained before the record existed have none, and
nothing is said about their class names; the shipped teacher's record was written from the synthetic world's caption
generator (`synthetic_world_vocabulary`), every word it can write."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .checkpoint import load_model_config
from .data.keywords import words
from .data.shards import ImageTextShards
from .runs import model_file, write_json_atomic
from .vocab import BACKGROUND

VOCABULARY_FILE = "caption_vocabulary.json"
MAX_CAPTIONS = 200_000  # a larger corpus is read at this many captions spread evenly (200,000: ~1 s, warm cache)
SHOWN_NAMES = 8  # a warning names this many classes, then says how many more


def caption_vocabulary(shards: ImageTextShards, max_captions: int = MAX_CAPTIONS) -> tuple[list[str], int]:
    """The distinct words of the captions in `shards` (all of them, or `max_captions` spread evenly over a larger
    corpus), sorted, and how many captions were read."""
    total = len(shards)
    indices = range(total) if total <= max_captions else np.unique(np.linspace(0, total - 1, max_captions).round())
    seen: set[str] = set()
    for caption in shards.captions(int(index) for index in indices):
        seen.update(words(caption))
    return sorted(seen), len(indices)


def record_caption_vocabulary(run: Path, shards: ImageTextShards, parent: Path | None = None) -> list[str]:
    """Write RUN/caption_vocabulary.json: the words of the training captions in `shards`, with those of the `parent`
    teacher a run continues (`--init-from`), where it has a record. Returns the words."""
    found, read = caption_vocabulary(shards)
    source = f"{read} of the {len(shards)} training captions under {shards.shards[0].parent}"
    inherited = load_caption_vocabulary(parent) if parent is not None else None
    if inherited is not None:
        found = sorted(inherited | set(found))
        source += f", and the words of {parent}'s"
    write_json_atomic(Path(run) / VOCABULARY_FILE, {"source": source, "words": found})
    return found


def load_caption_vocabulary(teacher_run: Path) -> set[str] | None:
    """The recorded caption words of a teacher run (a directory, or its model file), or None where there is no
    readable record."""
    path = Path(teacher_run)
    path = (path.parent if path.suffix == ".safetensors" else path) / VOCABULARY_FILE
    try:
        return set(json.loads(path.read_text())["words"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def teacher_caption_vocabulary(run: Path) -> set[str] | None:
    """The caption words of the teacher behind a run: a teacher's own, a student's teacher's (its `teacher_run`);
    None where the run, its teacher or the record is missing."""
    try:
        path = model_file(run)
        config = load_model_config(path)
    except (FileNotFoundError, ValueError):
        return None
    if config.get("kind") == "student":
        return load_caption_vocabulary(Path(config.get("teacher_run", "")))
    return load_caption_vocabulary(path)


def unseen_class_names(run: Path, names: Iterable[str]) -> list[str]:
    """The class names (and background words) in `names` with a word that never occurred in the training captions
    of the teacher behind `run`; none where that teacher's captions are not recorded."""
    known = teacher_caption_vocabulary(run)
    if known is None:
        return []
    return [name for name in names if name != BACKGROUND and any(word not in known for word in words(name))]


def unseen_warning(run: Path, names: list[str]) -> str | None:
    """One line naming the classes in `names` (the first SHOWN_NAMES of them) whose words the teacher behind `run`
    never read in its training captions; None when there are none (or its captions are not recorded)."""
    unseen = unseen_class_names(run, names)
    if not unseen:
        return None
    total = sum(name != BACKGROUND for name in names)
    more = len(unseen) - SHOWN_NAMES
    shown = ", ".join(unseen[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")
    return (f"{len(unseen)} of {total} class names never occurred in the teacher's training captions ({shown}): it "
            "has not learned them, and they will rarely win; see the README on what the teacher knows")


def synthetic_world_vocabulary() -> list[str]:
    """Every word the synthetic world's caption generator can write (its templates, background phrases, the things'
    names and the words joining them), sorted: the shipped teacher's caption vocabulary."""
    from .data.captions import SCENE_PHRASES, TEMPLATES, WHERE_PHRASES
    from .data.synth import THINGS

    phrases = [*TEMPLATES, *(p for ps in WHERE_PHRASES.values() for p in ps),
               *(p for ps in SCENE_PHRASES.values() for p in ps)]
    text = " ".join([re.sub(r"\{\w+\}", " ", phrase) for phrase in phrases] + [*THINGS, "a an and"])
    return sorted(set(words(text)))
