"""The images an exported model sees: the deployed preprocessing (stretch to the artifact's input size, CLIP's
normalisation, as `metadata.json` tells an app) applied to calibration images (shards or an image folder) and to
labelled validation images (parity)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.segfolder import IMAGE_SUFFIXES, SegmentationDataset
from ..data.shards import ImageTextShards, ShardIndexError
from ..data.transforms import IMAGE_MEAN, IMAGE_STD, normalize_uint8, to_rgb8

PIXEL_SCALE = 1.0 / 255.0


def preprocess_record() -> dict:
    """`metadata.json`'s `preprocess`: model input = ((pixel_0_255 * scale) - mean) / std, RGB, stretched."""
    return {"resize": "stretch", "scale": PIXEL_SCALE, "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD),
            "channels": "RGB", "layout": "NCHW"}


def preprocess(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image -> (1, 3, H, W) float32 model input: stretched (bilinear) to `size` = (H, W), normalised."""
    resized = to_rgb8(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None]
    return normalize_uint8(pixels)


@dataclass
class CalibrationSet:
    """Preprocessed calibration inputs and where they came from (recorded in `metadata.json`)."""

    source: str
    kind: str  # "shards" | "images"
    inputs: list[torch.Tensor]

    def record(self) -> dict:
        return {"source": self.source, "kind": self.kind, "images": len(self.inputs)}


def _image_files(folder: Path) -> list[Path]:
    for candidate in (folder, folder / "images"):
        files = sorted(p for p in candidate.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return files
    return []


def _decode(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb8(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def load_calibration(folder: Path, size: tuple[int, int], num_samples: int) -> CalibrationSet:
    """Up to `num_samples` preprocessed images from WebDataset shards (`folder/*.tar` or `folder/train/*.tar`) or an
    image folder (`folder/*.jpg|png` or `folder/images/...`), spread evenly over what is there; unreadable images
    are skipped. ValueError when none can be read."""
    folder = Path(folder)
    if num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {num_samples}")
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    files = _image_files(folder)
    if files:
        kind, count = "images", len(files)
        read = lambda index: files[index].read_bytes()  # noqa: E731
    else:
        try:
            shards = ImageTextShards(folder, require_caption=False)
        except ShardIndexError:
            raise ValueError(f"{folder} holds no readable images ({'/'.join(IMAGE_SUFFIXES)}) and no WebDataset "
                             "shards: give a calibration folder of training images") from None
        kind, count = "shards", len(shards)
        read = lambda index: shards.read(index)[0]  # noqa: E731
    picks = np.unique(np.linspace(0, count - 1, min(num_samples, count)).round().astype(int))
    inputs = [preprocess(image, size) for image in (_decode(read(int(i))) for i in picks) if image is not None]
    if not inputs:
        raise ValueError(f"none of the {len(picks)} calibration images picked from {folder} could be decoded")
    return CalibrationSet(str(folder.resolve()), kind, inputs)


def labelled_inputs(dataset: SegmentationDataset, size: tuple[int, int], limit: int | None = None
                    ) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(preprocessed input, mask at the input size) pairs of a labelled split; masks are resized with nearest
    neighbour (255 = ignore kept)."""
    pairs = []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        image, mask, _ = dataset[index]
        resized = Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST)
        pairs.append((preprocess(image, size), np.asarray(resized, dtype=np.int64)))
    return pairs
