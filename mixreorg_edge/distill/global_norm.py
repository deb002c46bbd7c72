"""A student's BatchNorm layers normalised over the global batch of a data-parallel run, so N processes distil what
one process distils with the global batch (`nn.SyncBatchNorm` runs on GPUs only; this runs with gloo too)."""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d
from torch import nn

from ..teacher.sync_norm import batch_norm


def _normalised(layer: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    layer.num_batches_tracked.add_(1)
    x = batch_norm(x, layer.running_mean, layer.running_var, True, layer.momentum, layer.eps, across_ranks=True)
    return x * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1) if layer.affine else x


class _GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _normalised(self, x) if self.training else super().forward(x)


class _GlobalBatchNormAct2d(BatchNormAct2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(_normalised(self, x))) if self.training else super().forward(x)


_GLOBAL = {nn.BatchNorm2d: _GlobalBatchNorm2d, BatchNormAct2d: _GlobalBatchNormAct2d}


def normalise_across_ranks(model: nn.Module) -> int:
    """Make `model`'s BatchNorm2d (and timm BatchNormAct2d) layers with running statistics and a momentum use the
    global batch's statistics in training, in place (their weights and buffers stay, so the saved model is the same
    model); how many layers changed. Other normalisations are per sample and need nothing."""
    changed = 0
    for layer in model.modules():
        global_type = _GLOBAL.get(type(layer))
        if global_type is not None and layer.track_running_stats and layer.momentum is not None:
            layer.__class__ = global_type
            changed += 1
    return changed
