"""Zero-shot segmentation with GroupViT's protocol: resize the short side, slide a window, average the logits of
overlapping windows, (optionally) refine them along the image's edges, upsample to the original size, apply the
vocabulary head's background rule, argmax."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data.segfolder import SegmentationDataset
from .data.transforms import normalize_uint8
from .head import VocabularyHead
from .metrics import SegmentationMetric
from .progress import track
from .refinement import MaskRefinement, refine_logits
from .vocab import Vocabulary, build_vocabulary


class DenseModel(Protocol):
    """Anything that maps normalised images to per-location joint-space embeddings (teacher or student)."""

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ZeroShotProtocol:
    """GroupViT's sliding window at a resized scale, and the mask refinement applied to its logits (off by
    default: GroupViT's protocol)."""

    short_side: int
    window: int
    stride: int
    max_long_side: int = 2048
    refinement: MaskRefinement = MaskRefinement()

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


def resized_input(image: Image.Image, protocol: ZeroShotProtocol, device: torch.device) -> torch.Tensor:
    """PIL image of any size -> (1, 3, h, w) normalised pixels at the protocol's resized resolution."""
    resized = resize_short_side(image.convert("RGB"), protocol.short_side, protocol.max_long_side)
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].to(device)
    return normalize_uint8(pixels)


@torch.no_grad()
def resized_logits(
    model: DenseModel, head: VocabularyHead, image: Image.Image, protocol: ZeroShotProtocol
) -> torch.Tensor:
    """PIL image of any size -> (1, V, h, w) vocabulary logits at the protocol's resized resolution, refined by the
    protocol's mask refinement (if any)."""
    pixels = resized_input(image, protocol, next(head.parameters()).device)
    logits = sliding_window_logits(model, head, pixels, protocol.window, protocol.stride)
    return refine_logits(pixels, logits, protocol.refinement)


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
    model: DenseModel, head: VocabularyHead, image: Image.Image, protocol: ZeroShotProtocol,
    max_bytes: int = 256 * 2**20,
) -> np.ndarray:
    """PIL image of any size -> (H, W) label-set indices at the image's own resolution (the background rule's
    image-level statistics taken at the protocol's resized scale).

    Upsampled logits larger than `max_bytes` (a 12-megapixel photo with ADE20K's 150 classes: 7 GB) are made and
    labelled in bands of rows, with the same bilinear weights."""
    logits = resized_logits(model, head, image, protocol)
    channels, height, width = logits.shape[1], image.height, image.width
    if channels * height * width * 4 <= max_bytes:
        upsampled = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return head.labels(upsampled, logits)[0].cpu().numpy().astype(np.int64)
    row_weights = bilinear_weights(height, logits.shape[2]).to(logits.device)
    column_weights = bilinear_weights(width, logits.shape[3]).to(logits.device)
    band = max(1, max_bytes // (channels * width * 4))
    labels = np.empty((height, width), dtype=np.int64)
    for top in range(0, height, band):
        rows = row_weights[top : top + band]
        upsampled = torch.einsum("yh,vhw,xw->vyx", rows, logits[0], column_weights)
        labels[top : top + len(rows)] = head.labels(upsampled[None], logits)[0].cpu().numpy()
    return labels


def protocol_record(protocol: ZeroShotProtocol, refined: bool = True) -> dict:
    """The protocol as recorded with scores and calibrations (`refined` False: its refinement switched off)."""
    refinement = protocol.refinement if refined else MaskRefinement()
    return {"short_side": protocol.short_side, "window": protocol.window, "stride": protocol.stride,
            "refine_iterations": refinement.iterations, "refine_dilations": list(refinement.dilations)}


def evaluate_settings(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: ZeroShotProtocol,
    settings: Sequence[tuple[float, bool]],
    templates: str = "ensemble",
    show_progress: bool = False,
    text_model: torch.nn.Module | None = None,
    description: str = "eval",
) -> dict[tuple[float, bool], dict]:
    """Zero-shot scores of `model` on a segmentation folder for each (background bias, refined) setting, from one
    forward pass per image: a bias only shifts the background words' logits (see calibration.py), before or after
    the protocol's refinement alike, and `refined` False scores the same logits unrefined (GroupViT's protocol).
    Per setting, what `evaluate` returns."""
    if not settings:
        raise ValueError("give at least one background bias")
    model.eval()
    vocabulary: Vocabulary = build_vocabulary(
        text_model or model, dataset.classes, dataset.background_words, templates, dataset.background_threshold
    )
    device = next(model.parameters()).device
    head = VocabularyHead(vocabulary).to(device)
    settings = [(float(bias), bool(refined)) for bias, refined in settings]
    metrics = {setting: SegmentationMetric(len(dataset.classes)) for setting in settings}
    for index in track(range(len(dataset)), f"{description} {dataset.label_set}", enabled=show_progress):
        image, mask, _ = dataset[index]
        pixels = resized_input(image, protocol, device)
        raw = sliding_window_logits(model, head, pixels, protocol.window, protocol.stride)
        size = (image.height, image.width)
        resized = {refined: refine_logits(pixels, raw, protocol.refinement) if refined else raw
                   for refined in {r for _, r in settings}}
        logits = {refined: F.interpolate(value, size=size, mode="bilinear", align_corners=False).cpu()
                  for refined, value in resized.items()}
        resized = {refined: value.cpu() for refined, value in resized.items()}
        target = torch.from_numpy(mask.astype(np.int64))
        for (bias, refined), metric in metrics.items():
            labels = head.labels(head.shift_background(logits[refined], bias),
                                 head.shift_background(resized[refined], bias))  # the image's at the resized scale
            metric.update(labels[0], target)
    return {(bias, refined): _scores(metric, dataset, protocol, refined, templates, bias)
            for (bias, refined), metric in metrics.items()}


def evaluate_biases(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: ZeroShotProtocol,
    biases: Sequence[float],
    templates: str = "ensemble",
    show_progress: bool = False,
    text_model: torch.nn.Module | None = None,
    description: str = "eval",
) -> dict[float, dict]:
    """`evaluate_settings` at each background bias in `biases`, under the whole protocol; keyed by bias."""
    scores = evaluate_settings(model, dataset, protocol, [(bias, True) for bias in biases], templates, show_progress,
                               text_model, description)
    return {bias: result for (bias, _), result in scores.items()}


def _scores(
    metric: SegmentationMetric, dataset: SegmentationDataset, protocol: ZeroShotProtocol, refined: bool,
    templates: str, bias: float,
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
        "protocol": protocol_record(protocol, refined),
    }


def evaluate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: ZeroShotProtocol,
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
