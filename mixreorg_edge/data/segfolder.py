"""Folder segmentation datasets for zero-shot evaluation.

Layout::

    ROOT/images/{key}.jpg|jpeg|png
    ROOT/masks/{label_set}/{key}.png   # mode L (or P), class indices, 255 = ignore
    ROOT/classes.json                  # {"label_sets": {name: [class, ...]},
                                       #  "background_words": {name: [word, ...]},   (optional)
                                       #  "background_threshold": {name: number}}   (optional)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..vocab import LabelSet
from .transforms import to_rgb8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_MODES = ("L", "P")


def _read_label_set(root: Path, label_set: str) -> LabelSet:
    """The classes, background words and background threshold of ``label_set`` from ``root/classes.json``."""
    path = root / "classes.json"
    if not path.is_file():
        raise FileNotFoundError(f"classes.json not found: {path}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON in {path}: {err}") from err
    if not isinstance(spec, dict):
        raise ValueError(f'{path} must hold an object with "label_sets"')
    label_sets = _per_label_set(spec, "label_sets", path)
    if label_set not in label_sets:
        raise ValueError(f"unknown label set {label_set!r} in {path}; available: {sorted(label_sets)}")
    threshold = _per_label_set(spec, "background_threshold", path).get(label_set, 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"{path}: the background_threshold of {label_set!r} must be a number, got {threshold!r}")
    if not label_sets[label_set]:
        raise ValueError(f"label set {label_set!r} has no classes")
    words = _per_label_set(spec, "background_words", path).get(label_set) or []
    try:
        return LabelSet(label_sets[label_set], words, float(threshold))
    except ValueError as err:
        raise ValueError(f"{path}, label set {label_set!r}: {err}") from None


def _per_label_set(spec: dict, key: str, path: Path) -> dict:
    """``spec[key]``, an object keyed by label set (absent: empty, except for the required "label_sets")."""
    value = spec.get(key, None if key == "label_sets" else {})
    if not isinstance(value, dict):
        raise ValueError(f'{path}: "{key}" must be an object keyed by label set name, got {type(value).__name__}')
    return value


def list_images(images_dir: Path) -> dict[str, Path]:
    """Map key -> image path for the images in ``images_dir``."""
    files = sorted(p for p in images_dir.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) found in {images_dir}")
    images: dict[str, Path] = {}
    for path in files:
        if path.stem in images:
            raise ValueError(f"two images share the key {path.stem!r}: {images[path.stem].name}, {path.name}")
        images[path.stem] = path
    return images


def read_class_mask(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 class indices of a mode L or P mask PNG, which must have its image's (W, H) size."""
    with Image.open(path) as m:
        if m.mode not in MASK_MODES:
            raise ValueError(f"mask {path} has mode {m.mode}; expected one of {MASK_MODES}")
        mask = np.array(m, dtype=np.uint8)
    if mask.shape != image_size[::-1]:
        raise ValueError(f"mask {path} is {mask.shape[::-1]} but its image is {image_size}")
    return mask


class ImageMaskSplit:
    """Images with one class-index mask each: a subclass says where a key's mask is (`_mask_path`) and hands its
    images to `_use_images`."""

    def _mask_path(self, key: str) -> Path:
        raise NotImplementedError

    def _use_images(self, images: dict[str, Path]) -> None:
        """Take `images` (key -> image path, in order) as the split, refusing one in which an image has no mask file
        (naming the first and counting them)."""
        self._images, self._keys = images, list(images)
        missing = [key for key in self._keys if not self._mask_path(key).is_file()]
        if missing:
            raise ValueError(f"image {missing[0]!r} has no mask {self._mask_path(missing[0])} "
                             f"({len(missing)} image(s) without a mask)")

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray, str]:
        """Return the i-th RGB image, its (H, W) uint8 mask as stored, and its key."""
        key = self._keys[i]
        try:
            with Image.open(self._images[key]) as img:
                image = to_rgb8(img)  # decodes the whole image: a truncated file fails here
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"cannot read image {self._images[key]}: {error}") from None
        return image, read_class_mask(self._mask_path(key), image.size), key


class SegmentationDataset(Protocol):
    """What evaluation and calibration read: a folder of this toolkit's layout or a benchmark's standard layout."""

    root: Path
    label_set: str
    classes: list[str]
    background_words: list[str]
    background_threshold: float

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray, str]: ...


class SegmentationFolder(ImageMaskSplit):
    """Images with per-label-set class-index masks, read from a folder."""

    def __init__(self, root: Path | str, label_set: str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        self.label_set = label_set
        labels = _read_label_set(self.root, label_set)
        self.classes, self.background_words = labels.classes, labels.background_words
        self.background_threshold = labels.background_threshold  # GroupViT's rule, used without background words
        self._masks_dir = self.root / "masks" / label_set
        self._use_images(list_images(self.root / "images"))

    def _mask_path(self, key: str) -> Path:
        return self._masks_dir / f"{key}.png"
