"""SegmentationMetric against torchmetrics and a plain numpy reference."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from mixreorg_edge.metrics import SegmentationMetric

NUM_CLASSES = 6
ABSENT = 4  # never in target nor prediction: union 0 over the dataset
ONLY_PREDICTED = 5  # predicted sometimes but never in the target: IoU 0, no accuracy


def _batches(seed: int = 0, n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        target = torch.randint(0, 4, (2, 17, 23), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.15] = 255
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=3), torch.randint(0, 4, target.shape, generator=g))
        pred[torch.rand(target.shape, generator=g) < 0.05] = ONLY_PREDICTED
        batches.append((pred.to(torch.uint8), target.to(torch.uint8)))
    return batches


def _numpy_reference(batches) -> dict:
    pred = np.concatenate([p.numpy().ravel() for p, _ in batches]).astype(np.int64)
    target = np.concatenate([t.numpy().ravel() for _, t in batches]).astype(np.int64)
    keep = target != 255
    pred, target = pred[keep], target[keep]
    ious, accs = [], []
    for c in range(NUM_CLASSES):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        ious.append(inter / union * 100 if union else math.nan)
        accs.append(inter / np.sum(target == c) * 100 if np.sum(target == c) else math.nan)
    return {
        "per_class_iou": ious,
        "miou": np.nanmean(ious),
        "pixel_accuracy": np.mean(pred == target) * 100,
        "mean_accuracy": np.nanmean(accs),
    }


@pytest.fixture
def result() -> dict:
    metric = SegmentationMetric(NUM_CLASSES)
    for pred, target in _batches():
        metric.update(pred, target)
    return metric.compute()


def test_matches_numpy_reference(result: dict) -> None:
    ref = _numpy_reference(_batches())
    assert result["per_class_iou"][ABSENT] is None
    assert result["per_class_iou"][ONLY_PREDICTED] == 0.0
    for got, want in zip(result["per_class_iou"], ref["per_class_iou"]):
        assert (got is None and math.isnan(want)) or got == pytest.approx(want)
    for key in ("miou", "pixel_accuracy", "mean_accuracy"):
        assert result[key] == pytest.approx(ref[key])


def test_matches_torchmetrics(result: dict) -> None:
    jaccard = MulticlassJaccardIndex(NUM_CLASSES, average=None, ignore_index=255)
    accuracy = MulticlassAccuracy(NUM_CLASSES, average="micro", ignore_index=255)
    for pred, target in _batches():
        jaccard.update(pred.long(), target.long())
        accuracy.update(pred.long(), target.long())
    per_class = jaccard.compute()
    # torchmetrics reports 0 (zero_division) for a class with an empty union; mmseg excludes it.
    assert per_class[ABSENT] == 0
    present = [c for c in range(NUM_CLASSES) if c != ABSENT]
    ours = torch.tensor([result["per_class_iou"][c] for c in present], dtype=torch.float64)
    torch.testing.assert_close(ours, per_class[present].double() * 100)
    assert result["miou"] == pytest.approx(float(per_class[present].double().mean() * 100))
    assert result["pixel_accuracy"] == pytest.approx(float(accuracy.compute()) * 100, abs=1e-4)


def test_accumulation_is_order_independent_and_resettable() -> None:
    metric = SegmentationMetric(NUM_CLASSES)
    for pred, target in reversed(_batches()):
        metric.update(pred, target)
    first = metric.compute()
    metric.reset()
    with pytest.raises(ValueError, match="no labelled pixels"):
        metric.compute()
    for pred, target in _batches():
        metric.update(pred, target)
    assert metric.compute() == first


def test_rejects_out_of_range_and_mismatched_inputs() -> None:
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match="pred values"):
        metric.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target values"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
    metric.update(torch.tensor([2, 9]), torch.tensor([2, 255]))  # ignored pixel's prediction is not checked
    assert metric.compute()["pixel_accuracy"] == 100.0
