"""The zero-shot benchmarks' validation splits in the layouts users have on disk.

The folders are the ones the datasets ship in, or that mmsegmentation's / GroupViT's conversion tools write:

* ``voc``: PASCAL VOC 2012 (``VOCdevkit/VOC2012``): ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs, 255 on
  boundaries), the keys in ``ImageSets/Segmentation/val.txt``;
* ``context``: PASCAL Context, 60 classes (``VOCdevkit/VOC2010`` after mmsegmentation's ``pascal_context.py``):
  ``JPEGImages/``, ``SegmentationClassContext/`` (0 = background), the keys in
  ``ImageSets/SegmentationContext/val.txt``;
* ``coco_object``: COCO-Object (``coco`` after GroupViT's ``convert_coco_object.py``): ``images/val2017/``,
  ``annotations/val2017/{key}_instanceTrainIds.png`` (0 = background, 1 - 80 the things);
* ``ade20k``: ADE20K (``ADEChallengeData2016``): ``images/validation/``, ``annotations/validation/`` with 0 = "other"
  (ignored) and class k stored as k + 1.

Class names, order and background thresholds are the built-in label sets of the same names (GroupViT's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..vocab import builtin_label_set
from .segfolder import ImageMaskSplit, SegmentationFolder, list_images
from .synth.scene import IGNORE_INDEX


@dataclass(frozen=True)
class StandardLayout:
    """Where one benchmark keeps its validation images and masks, relative to the dataset root."""

    title: str
    images: str
    masks: str
    mask_suffix: str
    keys_file: str | None  # one key per line; None: every image in `images`
    reduce_zero_label: bool = False  # mask 0 is "other" (ignored), class k is stored as k + 1


LAYOUTS: dict[str, StandardLayout] = {
    "voc": StandardLayout("PASCAL VOC 2012", "JPEGImages", "SegmentationClass", ".png",
                          "ImageSets/Segmentation/val.txt"),
    "context": StandardLayout("PASCAL Context (60 classes)", "JPEGImages", "SegmentationClassContext", ".png",
                              "ImageSets/SegmentationContext/val.txt"),
    "coco_object": StandardLayout("COCO-Object", "images/val2017", "annotations/val2017", "_instanceTrainIds.png",
                                  None),
    "ade20k": StandardLayout("ADE20K", "images/validation", "annotations/validation", ".png", None,
                             reduce_zero_label=True),
}


def _layouts_in(root: Path) -> list[str]:
    """The label sets whose standard layout `root` holds."""
    return [name for name, layout in LAYOUTS.items()
            if (root / layout.images).is_dir() and (root / layout.masks).is_dir()]


class StandardLayoutDataset(ImageMaskSplit):
    """A benchmark's validation split read in place: the same interface as `SegmentationFolder`."""

    def __init__(self, root: Path | str, label_set: str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        if label_set not in LAYOUTS:
            raise ValueError(f"no standard layout for label set {label_set!r}; known: {', '.join(LAYOUTS)}")
        self.layout = layout = LAYOUTS[label_set]
        found = _layouts_in(self.root)
        if label_set not in found:
            hint = f"; it holds the layout of --label-set {' or '.join(found)}" if found else ""
            raise FileNotFoundError(f"{self.root} does not hold the {layout.title} layout: expected "
                                    f"{layout.images}/ and {layout.masks}/ in it{hint}")
        self.label_set = label_set
        labels = builtin_label_set(label_set)
        self.classes, self.background_words = labels.classes, labels.background_words
        self.background_threshold = labels.background_threshold
        self._use_images(self._read_images())

    def _read_images(self) -> dict[str, Path]:
        """key -> image path: every image of the folder, or those of the validation list, in its order."""
        layout = self.layout
        images = list_images(self.root / layout.images)
        if layout.keys_file is None:
            return images
        keys_file = self.root / layout.keys_file
        if not keys_file.is_file():
            raise FileNotFoundError(f"{layout.title}: the validation list {keys_file} is missing")
        keys = [line.strip() for line in keys_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        if not keys:
            raise ValueError(f"{keys_file} lists no images")
        absent = [key for key in keys if key not in images]
        if absent:
            raise ValueError(f"{keys_file} lists {absent[0]!r}, which has no image in {self.root / layout.images} "
                             f"({len(absent)} missing)")
        return {key: images[key] for key in keys}

    def _mask_path(self, key: str) -> Path:
        return self.root / self.layout.masks / f"{key}{self.layout.mask_suffix}"

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray, str]:
        """Return the RGB image, its (H, W) uint8 mask of class indices (255 = ignore) and its key."""
        image, mask, key = super().__getitem__(i)
        path = self._mask_path(key)
        offset = int(self.layout.reduce_zero_label)
        stored = mask[mask != IGNORE_INDEX]
        if stored.size and int(stored.max()) >= len(self.classes) + offset:
            raise ValueError(f"mask {path} holds the value {int(stored.max())}, but {self.layout.title} masks hold "
                             f"0 - {len(self.classes) - 1 + offset} and 255 (a mask of another label set?)")
        if self.layout.reduce_zero_label:  # as mmsegmentation: 0 -> ignored, k -> k - 1, 255 stays ignored
            mask = np.where((mask == 0) | (mask == IGNORE_INDEX), IGNORE_INDEX, mask - 1).astype(np.uint8)
        return image, mask, key


def open_segmentation_dataset(root: Path | str, label_set: str) -> SegmentationFolder | StandardLayoutDataset:
    """An evaluation split: this toolkit's folder layout when `root` has a classes.json (or its images/ and masks/),
    else a benchmark's standard layout (`label_set` voc, context, coco_object or ade20k)."""
    root = Path(root)
    ours = (root / "classes.json").is_file() or ((root / "images").is_dir() and (root / "masks").is_dir())
    if ours:
        return SegmentationFolder(root, label_set)
    if label_set in LAYOUTS:
        return StandardLayoutDataset(root, label_set)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    found = _layouts_in(root)
    if found:
        raise ValueError(f"{root} has no classes.json but holds a benchmark's standard layout: give "
                         f"--label-set {' or '.join(found)}")
    raise FileNotFoundError(f"classes.json not found in {root}: an evaluation folder holds images/, "
                            f"masks/<label-set>/ and classes.json; a benchmark in its standard layout needs "
                            f"--label-set {'|'.join(LAYOUTS)}")
