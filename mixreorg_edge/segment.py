"""`segment`: one image -> label map -> colour overlay PNG, for a teacher or a student run."""

from __future__ import annotations

import math
import warnings
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


MAX_WORKING_PIXELS = 4096 * 4096  # `segment` shrinks larger images to this (a 12-MP phone photo stays whole)


def _working_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` scaled down (aspect kept) to at most `max_pixels` pixels."""
    width, height = size
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def read_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file fully (JPEG/PNG/...) as 8-bit RGB, turned upright by its EXIF orientation (as phone photos
    are shown), with a clear error for missing or unreadable files.

    An image of more than `max_pixels` pixels is shrunk to that many (a JPEG decoded at a reduced scale; other
    formats decoded and reduced at once), so what follows it needs memory bounded by `max_pixels`; its size before
    is in `info["original_size"]`. Pillow's DecompressionBombWarning (images over `Image.MAX_IMAGE_PIXELS`) is not
    shown: callers say what they did with a large image. Images over Pillow's hard limit (twice that) are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                original = image.size
                if max_pixels is not None and original[0] * original[1] > max_pixels:
                    if image.mode not in ("RGB", "L"):  # palette, 1-bit and 16-bit images resize as RGB
                        image = to_rgb8(image)
                    image.thumbnail(_working_size(original, max_pixels), Image.Resampling.BILINEAR)
                else:
                    image.load()
                upright = to_rgb8(ImageOps.exif_transpose(image))
                if upright.size != image.size:  # turned a quarter: so is the size it had
                    original = original[::-1]
    except Image.DecompressionBombError:
        raise ValueError(f"cannot read image {path}: it has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's "
                         "limit against decompression bombs; shrink it first (e.g. to 8000 px on the long side)"
                         ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None
    if upright.size[0] * upright.size[1] < original[0] * original[1]:
        upright.info["original_size"] = original
    return upright


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
    beside it) to `out`. An image over MAX_WORKING_PIXELS is segmented, and overlaid, shrunk to that many pixels
    (`original_size` in the result says it was)."""
    image = read_image(image_path, MAX_WORKING_PIXELS)
    model, config, vocabulary = run_vocabulary(model_path, classes, vocab)
    labels = predict_label_map(model, VocabularyHead(vocabulary), image, protocol_of(config))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_overlay(image, labels, vocabulary.label_set).save(out, format="PNG")
    counts = np.bincount(labels.ravel(), minlength=len(vocabulary.label_set)) / labels.size
    return {
        "out": str(out),
        "size": [image.width, image.height],
        "original_size": list(image.info.get("original_size", image.size)),
        "classes": vocabulary.label_set,
        "background_words": vocabulary.background_words,
        "fractions": {name: round(float(f), 4) for name, f in zip(vocabulary.label_set, counts) if f > 0},
    }
