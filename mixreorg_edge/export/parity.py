"""Parity of an artifact against the float PyTorch graph it came from, on labelled validation images: score errors,
cosine of the outputs, pixel agreement of the label maps, and mIoU through the artifact's runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..head import VocabularyHead
from ..metrics import SegmentationMetric
from .target import Runner

THRESHOLDS = {"fp32": 0.995, "fp16": 0.97, "bf16": 0.97, "int8": 0.97}  # minimum pixel agreement of the label maps


class ParityError(RuntimeError):
    """An exported artifact whose labels disagree with PyTorch's more than its precision allows."""


def output_labels(output: torch.Tensor, kind: str, head: VocabularyHead, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) label indices from an artifact's output of `kind` (embeddings go through the vocabulary head)."""
    if kind == "labels":
        return output.long()
    if kind == "scores":
        return output.argmax(dim=1)
    logits = F.interpolate(head.logits(output.float()), size=size, mode="bilinear", align_corners=False)
    return head.labels(logits)


@torch.no_grad()
def measure_parity(run: Runner, reference: nn.Module, pairs: Sequence[tuple[torch.Tensor, np.ndarray]], kind: str,
                   head: VocabularyHead, num_classes: int | None) -> dict[str, Any]:
    """`parity` of `run` against `reference` over `pairs` (input, mask); mIoU only when `num_classes` is given (the
    vocabulary is the split's label set). Fractions in 0..1, mIoU in points; errors and cosine are None for a
    `labels` output."""
    if not pairs:
        raise ValueError("parity needs at least one labelled image")
    agree = total = 0
    max_error, error_sum, error_count, cosines = 0.0, 0.0, 0, []
    metrics = {name: SegmentationMetric(num_classes) for name in ("miou", "reference_miou")} if num_classes else {}
    for inputs, mask in pairs:
        expected = reference(inputs)
        actual = torch.from_numpy(np.asarray(run(inputs.numpy())))
        if tuple(actual.shape) != tuple(expected.shape):
            raise ParityError(f"the artifact's output has shape {tuple(actual.shape)}, PyTorch's {tuple(expected.shape)}")
        if kind != "labels":
            difference = (actual.float() - expected.float()).abs()
            max_error = max(max_error, float(difference.max()))
            error_sum, error_count = error_sum + float(difference.sum()), error_count + difference.numel()
            cosines.append(float(F.cosine_similarity(actual.float(), expected.float(), dim=1).mean()))
        size = tuple(inputs.shape[-2:])
        labels, reference_labels = (output_labels(x, kind, head, size)[0] for x in (actual, expected))
        agree += int((labels == reference_labels).sum())
        total += labels.numel()
        if metrics:
            target = torch.from_numpy(mask)
            metrics["miou"].update(labels, target)
            metrics["reference_miou"].update(reference_labels, target)
    floating = kind != "labels"
    return {
        "images": len(pairs),
        "pixel_agreement": round(agree / total, 6),
        "max_abs_error": round(max_error, 6) if floating else None,
        "mean_abs_error": round(error_sum / error_count, 8) if floating else None,
        "cosine": round(float(np.mean(cosines)), 6) if floating else None,
        **{name: round(metric.compute()["miou"], 2) for name, metric in metrics.items()},
        **({} if metrics else {"miou": None, "reference_miou": None}),
    }


def check_parity(parity: dict[str, Any], precision: str, threshold: float | None = None) -> str | None:
    """Why `parity` fails `threshold` (default: its precision's) of pixel agreement (None: it passes)."""
    threshold = THRESHOLDS[precision] if threshold is None else threshold
    if parity["pixel_agreement"] < threshold:
        return (f"{precision} labels agree with PyTorch on {parity['pixel_agreement']:.2%} of pixels "
                f"(at least {threshold:.1%} needed)")
    return None
