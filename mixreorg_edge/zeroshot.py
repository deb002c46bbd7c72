"""Zero-shot segmentation with GroupViT's protocol: resize the short side, slide a window, average the logits of
overlapping windows, upsample to the original size, apply the vocabulary head's background rule, argmax."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import Progress

from .data.segfolder import SegmentationDataset
from .data.transforms import normalize_uint8
from .head import VocabularyHead
from .metrics import SegmentationMetric
from .vocab import Vocabulary, build_vocabulary


class DenseModel(Protocol):
    """Anything that maps normalised images to per-location joint-space embeddings (teacher or student)."""

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SlidingWindow:
    short_side: int
    window: int
    stride: int
    max_long_side: int = 2048

    def __post_init__(self) -> None:
        for name in ("short_side", "window", "stride", "max_long_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {getattr(self, name)}")
        if self.stride > self.window:
            raise ValueError(f"the stride ({self.stride}) must not exceed the window ({self.window}): pixels between "
                             "windows would get no prediction")


def resize_short_side(image: Image.Image, short_side: int, max_long_side: int = 2048) -> Image.Image:
    """Resize so the short side is `short_side`, the long side capped at `max_long_side` (aspect kept), bilinear as
    mmsegmentation's test-time Resize (Pillow's bilinear also filters when shrinking, which cv2's does not)."""
    width, height = image.size
    scale = min(short_side / min(width, height), max_long_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def sliding_window_logits(
    model: DenseModel, head: VocabularyHead, image: torch.Tensor, window: int, stride: int, batch: int = 16
) -> torch.Tensor:
    """(1, 3, H, W) normalised image -> (1, V, H, W) vocabulary logits averaged over overlapping windows.

    Windows are `window` pixels square (smaller images are zero-padded up to one window)."""
    _, _, height, width = image.shape
    pad_h, pad_w = max(window - height, 0), max(window - width, 0)
    padded = F.pad(image, (0, pad_w, 0, pad_h))
    full_h, full_w = padded.shape[-2:]
    boxes = [(y, x) for y in _window_starts(full_h, window, stride) for x in _window_starts(full_w, window, stride)]
    total = torch.zeros(1, head.classifier.out_channels, full_h, full_w, device=image.device)
    count = torch.zeros(1, 1, full_h, full_w, device=image.device)
    for start in range(0, len(boxes), batch):
        chunk = boxes[start : start + batch]
        crops = torch.cat([padded[:, :, y : y + window, x : x + window] for y, x in chunk])
        logits = head.logits(model.encode_dense(crops).float())
        logits = F.interpolate(logits, size=(window, window), mode="bilinear", align_corners=False)
        for (y, x), crop_logits in zip(chunk, logits):
            total[0, :, y : y + window, x : x + window] += crop_logits
            count[0, :, y : y + window, x : x + window] += 1
    return (total / count)[:, :, :height, :width]


@torch.no_grad()
def resized_logits(
    model: DenseModel, head: VocabularyHead, image: Image.Image, protocol: SlidingWindow
) -> torch.Tensor:
    """PIL image of any size -> (1, V, h, w) vocabulary logits at the protocol's resized resolution."""
    device = next(head.parameters()).device
    resized = resize_short_side(image.convert("RGB"), protocol.short_side, protocol.max_long_side)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].to(device)
    return sliding_window_logits(model, head, normalize_uint8(pixels), protocol.window, protocol.stride)


@torch.no_grad()
def image_logits(model: DenseModel, head: VocabularyHead, image: Image.Image, protocol: SlidingWindow) -> torch.Tensor:
    """PIL image of any size -> (1, V, H, W) vocabulary logits at the image's own resolution."""
    logits = resized_logits(model, head, image, protocol)
    return F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)


def bilinear_weights(out_size: int, in_size: int) -> torch.Tensor:
    """(out_size, in_size) weights of `F.interpolate(mode="bilinear", align_corners=False)` along one axis, so a band
    of output rows can be interpolated on its own."""
    source = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    fraction = source - low
    weights = torch.zeros(out_size, in_size)
    rows = torch.arange(out_size)
    weights.index_put_((rows, low), 1.0 - fraction, accumulate=True)
    weights.index_put_((rows, high), fraction, accumulate=True)
    return weights


@torch.no_grad()
def predict_label_map(
    model: DenseModel, head: VocabularyHead, image: Image.Image, protocol: SlidingWindow,
    max_bytes: int = 256 * 2**20,
) -> np.ndarray:
    """PIL image of any size -> (H, W) label-set indices at the image's own resolution.

    Upsampled logits larger than `max_bytes` (a 12-megapixel photo with ADE20K's 150 classes: 7 GB) are made and
    labelled in bands of rows, with the same bilinear weights."""
    logits = resized_logits(model, head, image, protocol)
    channels, height, width = logits.shape[1], image.height, image.width
    if channels * height * width * 4 <= max_bytes:
        upsampled = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return head.labels(upsampled)[0].cpu().numpy().astype(np.int64)
    row_weights = bilinear_weights(height, logits.shape[2]).to(logits.device)
    column_weights = bilinear_weights(width, logits.shape[3]).to(logits.device)
    band = max(1, max_bytes // (channels * width * 4))
    labels = np.empty((height, width), dtype=np.int64)
    for top in range(0, height, band):
        rows = row_weights[top : top + band]
        upsampled = torch.einsum("yh,vhw,xw->vyx", rows, logits[0], column_weights)
        labels[top : top + len(rows)] = head.labels(upsampled[None])[0].cpu().numpy()
    return labels


def evaluate_biases(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: SlidingWindow,
    biases: Sequence[float],
    templates: str = "ensemble",
    show_progress: bool = False,
    text_model: torch.nn.Module | None = None,
    description: str = "eval",
) -> dict[float, dict]:
    """Zero-shot scores of `model` on a segmentation folder at each background bias in `biases` (the background
    words' log-prior, see calibration.py), from one forward pass per image: a bias only shifts the background words'
    logits, so every bias is applied to the same logits. Per bias, what `evaluate` returns."""
    if not biases:
        raise ValueError("give at least one background bias")
    model.eval()
    vocabulary: Vocabulary = build_vocabulary(
        text_model or model, dataset.classes, dataset.background_words, templates, dataset.background_threshold
    )
    head = VocabularyHead(vocabulary).to(next(model.parameters()).device)
    metrics = {float(bias): SegmentationMetric(len(dataset.classes)) for bias in biases}
    with Progress(disable=not show_progress, transient=True) as progress:
        for index in progress.track(range(len(dataset)), description=f"{description} {dataset.label_set}"):
            image, mask, _ = dataset[index]
            logits = image_logits(model, head, image, protocol).cpu()
            target = torch.from_numpy(mask.astype(np.int64))
            for bias, metric in metrics.items():
                metric.update(head.labels(head.shift_background(logits, bias))[0], target)
    return {bias: _scores(metric, dataset, protocol, templates, bias) for bias, metric in metrics.items()}


def _scores(
    metric: SegmentationMetric, dataset: SegmentationDataset, protocol: SlidingWindow, templates: str, bias: float
) -> dict:
    scores = metric.compute()
    return {
        "label_set": dataset.label_set,
        "num_images": len(dataset),
        "miou": scores["miou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "per_class_iou": dict(zip(dataset.classes, scores["per_class_iou"])),
        "templates": templates,
        "background_words": dataset.background_words,
        "background_bias": bias,
        "protocol": {"short_side": protocol.short_side, "window": protocol.window, "stride": protocol.stride},
    }


def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: SlidingWindow,
    templates: str = "ensemble",
    show_progress: bool = False,
    text_model: torch.nn.Module | None = None,
    background_bias: float = 0.0,
) -> dict:
    """Zero-shot mIoU of `model` on a segmentation folder, accumulated over the whole dataset. Class names are
    embedded by `text_model` (default: `model` itself; a student passes its teacher); `background_bias` is the
    model's calibrated background log-prior (see calibration.py; 0 = uncalibrated)."""
    return evaluate_biases(model, dataset, protocol, (background_bias,), templates, show_progress,
                           text_model)[float(background_bias)]
