"""`segment`: one image -> label map -> colour overlay PNG, for a teacher or a student run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .calibration import with_run_calibration
from .data.transforms import to_rgb8
from .head import VocabularyHead
from .overlay import draw_overlay
from .pipeline import protocol_of
from .runs import load_model, load_run_vocabulary, load_text_model
from .vocab import Vocabulary, vocabulary_for
from .zeroshot import predict_label_map


def read_image(path: Path) -> Image.Image:
    """Open an image file fully (JPEG/PNG/...) as 8-bit RGB, turned upright by its EXIF orientation (as phone photos
    are shown), with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(ImageOps.exif_transpose(image))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def run_vocabulary(model_path: Path, classes: str | None, vocab: Path | None) -> tuple[Any, dict, Vocabulary]:
    """Load a run's model and the vocabulary to segment with (built from `classes` with the run's calibrated
    background bias for them, if any, or read from `vocab` as it is).

    A student has no text encoder: `classes` are embedded by the teacher it was distilled from."""
    if (classes is None) == (vocab is None):
        raise ValueError("pass exactly one of --classes or --vocab")
    model, config = load_model(model_path)
    if vocab is not None:
        vocabulary = load_run_vocabulary(model, config, vocab)
    else:
        text_model = load_text_model(model, config)
        vocabulary = vocabulary_for(text_model, classes, templates=config["teacher"]["eval"]["templates"])
        vocabulary = with_run_calibration(model_path, vocabulary, protocol_of(config).refinement.iterations)
    return model, config, vocabulary


def segment_image(
    model_path: Path, image_path: Path, out: Path, classes: str | None = None, vocab: Path | None = None
) -> dict[str, Any]:
    """Segment one image and write a colour overlay (PNG: the upright image, enlarged when small, with the legend
    beside it) to `out`."""
    image = read_image(image_path)
    model, config, vocabulary = run_vocabulary(model_path, classes, vocab)
    labels = predict_label_map(model, VocabularyHead(vocabulary), image, protocol_of(config))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_overlay(image, labels, vocabulary.label_set).save(out, format="PNG")
    counts = np.bincount(labels.ravel(), minlength=len(vocabulary.label_set)) / labels.size
    return {
        "out": str(out),
        "size": [image.width, image.height],
        "fractions": {name: round(float(f), 4) for name, f in zip(vocabulary.label_set, counts) if f > 0},
    }
