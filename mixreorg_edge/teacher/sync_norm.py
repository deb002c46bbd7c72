"""Batch normalisation over the global batch of a data-parallel run (what `nn.SyncBatchNorm` does, here functional,
for the text embeddings and the students' BatchNorm layers, on CPUs with gloo as well as on GPUs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import sum_across_ranks, world


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    across_ranks: bool = False,
) -> torch.Tensor:
    """`F.batch_norm` of (N, C, ...) `x` without affine; in training with `across_ranks` under torchrun, with the
    statistics of every rank's samples (summed with gradients), the running statistics (when given) updated with
    them."""
    if not (training and across_ranks and world().size > 1):
        return F.batch_norm(x, running_mean, running_var, training=training, momentum=momentum, eps=eps)
    x = x.float()  # statistics in float32 under bf16 autocast, as autocast runs F.batch_norm
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    count = x.numel() // x.shape[1] * world().size
    mean = sum_across_ranks(x.sum(dim=dims)) / count
    centred = x - mean.view(shape)
    var = sum_across_ranks(centred.pow(2).sum(dim=dims)) / count
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * count / (count - 1)).to(running_var.dtype), momentum)
    return centred / torch.sqrt(var + eps).view(shape)
