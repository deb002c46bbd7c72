"""Batch normalisation over the global batch of a data-parallel run (what `nn.SyncBatchNorm` does, here for the
functional, affine-free normalisation of the text embeddings, on the CPU as well)."""

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
    """`F.batch_norm` of (N, C) `x` without affine; in training with `across_ranks` under torchrun, with the
    statistics of every rank's rows (summed with gradients), the running statistics (when given) updated with them."""
    if not (training and across_ranks and world().size > 1):
        return F.batch_norm(x, running_mean, running_var, training=training, momentum=momentum, eps=eps)
    count = x.shape[0] * world().size
    mean = sum_across_ranks(x.sum(dim=0)) / count
    var = sum_across_ranks((x - mean).pow(2).sum(dim=0)) / count
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * count / (count - 1)).to(running_var.dtype), momentum)
    return (x - mean) / torch.sqrt(var + eps)
