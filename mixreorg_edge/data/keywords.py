"""Caption keywords: the frequent content words of a caption corpus, and which of them each caption names.

Used for the teacher's multi-label contrastive loss (GroupViT's "a photo of a {noun}" prompts; without a POS tagger,
which would need a download, keywords are the corpus's frequent non-stop-words) and as the default distillation
vocabulary."""

from __future__ import annotations

import re
from collections import Counter

import torch

from .shards import ImageTextShards

STOP_WORDS = frozenset(
    "a an the of on in at to and or with by for from over under near is are this that there these its it my our "
    "your their some one two three photo picture image view look shot scene front behind next here".split()
)
MIN_COUNT = 5


def words(caption: str) -> list[str]:
    """Lower-case alphabetic words of a caption, in order."""
    return re.findall(r"[a-z]+", caption.lower())


def caption_words(
    shards: ImageTextShards, max_captions: int = 5000, max_words: int = 256, needed_for: str = ""
) -> list[str]:
    """The `max_words` most frequent content words (3+ letters, seen at least MIN_COUNT times) of the first captions,
    most frequent first; `needed_for` completes the error raised when there is none (e.g. image-only shards)."""
    counts: Counter[str] = Counter()
    for index in range(min(len(shards), max_captions)):
        counts.update(w for w in words(shards.read(index)[1]) if w not in STOP_WORDS and len(w) > 2)
    found = [word for word, count in counts.most_common(max_words) if count >= MIN_COUNT]
    if not found:
        raise ValueError(f"the captions under {shards.shards[0].parent} have no content word seen {MIN_COUNT} times "
                         f"or more (are they image-only shards?){': ' + needed_for if needed_for else ''}")
    return found


def caption_keywords(caption: str, vocabulary: frozenset[str] | set[str]) -> list[str]:
    """The distinct vocabulary words a caption names, in order of first appearance."""
    return list(dict.fromkeys(w for w in words(caption) if w in vocabulary))


def keyword_batch(captions: list[str], vocabulary: frozenset[str], per_caption: int,
                  generator: torch.Generator | None = None) -> tuple[list[str], torch.Tensor]:
    """The distinct keywords of a batch (up to `per_caption` per caption, chosen with `generator`, else torch's
    global RNG) and a (captions, keywords) 0/1 matrix of which caption named which."""
    chosen = []
    for caption in captions:
        found = caption_keywords(caption, vocabulary)
        if len(found) > per_caption:
            found = [found[i] for i in sorted(torch.randperm(len(found), generator=generator)[:per_caption].tolist())]
        chosen.append(found)
    batch_words = list(dict.fromkeys(w for found in chosen for w in found))
    column = {w: i for i, w in enumerate(batch_words)}
    targets = torch.zeros(len(captions), len(batch_words))
    for row, found in enumerate(chosen):
        targets[row, [column[w] for w in found]] = 1.0
    return batch_words, targets
