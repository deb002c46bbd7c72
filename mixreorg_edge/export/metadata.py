"""`metadata.json`: what an app (or any client that never imports this package) needs to run an artifact, and the
vocabulary file an `embeddings` artifact ships with."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

from ..head import TOP_CLASSES
from ..vocab import Vocabulary

FORMAT_VERSION = 1
VOCABULARY_JSON = "vocabulary.json"
VOCABULARY_SAFETENSORS = "vocabulary.safetensors"

EMBEDDINGS_TO_LABELS = (
    "logits[v, y, x] = logit_scale * sum_e(vocabulary.embeddings[v][e] * embeddings[0, e, y, x]) + bias[v], "
    "bias[v] = background_bias for the background words (the entries after the foreground classes), else 0; "
    "upsample logits bilinearly (align_corners=false, half-pixel centres) from (h, w) to the input's (H, W); "
    "with background words: per pixel best = max over the foreground entries (ties: the first), and background wins "
    "where logsumexp(logits of the background words) > best; "
    "without them, with a background_threshold t (GroupViT's rule): kept = the top_classes (5) foreground entries "
    "with the highest mean logit over all pixels of the image (ties: the first), "
    "score[c] = softmax over the kept entries (0 for the others) x softmax over all foreground entries, "
    "per pixel best = max over c of score[c] (ties: the first), and background wins where best < min(t, the "
    "largest score[c] anywhere in the image); "
    "label = background_index where background wins, else the best foreground entry's label index "
    "(its position in `labels`)"
)


def vocab_hash(vocabulary: Vocabulary) -> str:
    """16 hex chars of a sha256 over everything that decides the labels: names, embeddings, scale, background."""
    digest = hashlib.sha256()
    digest.update(json.dumps([vocabulary.label_set, vocabulary.background_words, vocabulary.logit_scale,
                              vocabulary.background_bias, vocabulary.background_threshold]).encode())
    digest.update(vocabulary.embeddings.float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def background_record(vocabulary: Vocabulary) -> dict[str, Any]:
    """How the background class is decided."""
    if vocabulary.background_index is None:
        return {"rule": "none", "index": None}
    if vocabulary.background_words:
        return {"rule": "background words", "index": vocabulary.background_index,
                "words": vocabulary.background_words, "bias": vocabulary.background_bias}
    return {"rule": "threshold", "index": vocabulary.background_index,
            "threshold": vocabulary.background_threshold, "top_classes": TOP_CLASSES}


def vocabulary_json(vocabulary: Vocabulary) -> dict[str, Any]:
    """A vocabulary as plain JSON (what an app reads to turn an `embeddings` output into labels)."""
    return {"format_version": FORMAT_VERSION, "labels": vocabulary.label_set,
            "foreground": vocabulary.foreground, "background_words": vocabulary.background_words,
            "background_index": vocabulary.background_index, "background_bias": vocabulary.background_bias,
            "background_threshold": vocabulary.background_threshold, "logit_scale": vocabulary.logit_scale,
            "embed_dim": vocabulary.embed_dim, "teacher": vocabulary.teacher, "vocab_hash": vocab_hash(vocabulary),
            "embeddings": vocabulary.embeddings.float().tolist()}


def toolkit_versions(runtime: dict[str, str]) -> dict[str, Any]:
    return {"mixreorg_edge": version("mixreorg-edge"), "runtime": runtime}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
