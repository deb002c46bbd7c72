"""Semantic segmentation metrics accumulated over a dataset."""

from __future__ import annotations

import math

import torch


class SegmentationMetric:
    """Accumulates a confusion matrix over a dataset (GroupViT/mmseg convention): mIoU = mean over classes of IoU, where classes whose union is 0 over the whole dataset are excluded (None in per_class_iou)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Clear the accumulated confusion matrix."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of predicted and target class indices (same shape; target == ignore_index is skipped)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer class-index tensors")
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long().to(target.device)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        self._check_range("pred", pred)
        self._check_range("target", target)
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def _check_range(self, name: str, values: torch.Tensor) -> None:
        if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
            raise ValueError(
                f"{name} values must be in [0, {self.num_classes}) (ignore_index={self.ignore_index} "
                f"allowed in target); got range [{int(values.min())}, {int(values.max())}]"
            )

    def compute(self) -> dict:
        """Return miou, per_class_iou (None for absent classes), pixel_accuracy and mean_accuracy, all in percent."""
        conf = self.confusion.double()
        total = conf.sum()
        if total == 0:
            raise ValueError("no labelled pixels have been accumulated")
        tp = conf.diag()
        target_area = conf.sum(1)
        union = target_area + conf.sum(0) - tp
        iou = torch.where(union > 0, tp / union, torch.nan) * 100
        accuracy = torch.where(target_area > 0, tp / target_area, torch.nan) * 100
        return {
            "miou": float(iou.nanmean()),
            "per_class_iou": [None if math.isnan(v) else v for v in iou.tolist()],
            "pixel_accuracy": float(tp.sum() / total * 100),
            "mean_accuracy": float(accuracy.nanmean()),
        }
