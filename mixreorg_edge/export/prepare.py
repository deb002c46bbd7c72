"""Inference-time rewrites of a deployable graph, checked against the original: timm re-parameterisation
(RepViT, FastViT, ...), BatchNorm folded into the convolution before it, channels-last memory format.

Runtimes such as XNNPACK, Core ML and TensorRT fold BatchNorm themselves; eager PyTorch does not, so latency of the
eager graph is measured on the prepared copy."""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d
from timm.utils.model import reparameterize_model
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(norm, nn.BatchNorm2d)
        and norm.track_running_stats
        and norm.affine
        and conv.out_channels == norm.num_features
    )


def _after_fold(norm: nn.BatchNorm2d) -> nn.Module:
    """What stays of a folded norm layer: timm's BatchNormAct2d keeps its dropout and activation."""
    if isinstance(norm, BatchNormAct2d):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm2d registered right after a Conv2d in the same parent (timm's and torchvision's layout)
    into that convolution, in place; returns how many were folded. The model must be in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorms needs an eval-mode model (it folds the running statistics)")
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if _foldable(conv, norm):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(parent, norm_name, _after_fold(norm))
                folded += 1
    return folded


@torch.inference_mode()
def prepare_for_inference(model: nn.Module, example: torch.Tensor, atol: float = 1e-3) -> nn.Module:
    """An eval-mode, re-parameterised, BatchNorm-folded, channels-last copy of `model` (which is put in eval mode too).

    The copy's output on `example` must match the original's (floating outputs within `atol` times the output's
    scale, max(1, max |output|), so raw features of any magnitude are held to the same relative rounding as unit-norm
    embeddings; integer outputs on at least 99.9% of elements); otherwise RuntimeError: a rewrite that changes the
    model is never used silently."""
    original = model.eval()
    prepared = reparameterize_model(original)  # a re-parameterised deep copy (timm's inplace=False)
    prepared.eval()
    fold_batchnorms(prepared)
    prepared = prepared.to(memory_format=torch.channels_last)
    expected = original(example)
    actual = prepared(example.contiguous(memory_format=torch.channels_last))
    if expected.is_floating_point():
        error = (expected - actual).abs().max().item()
        tolerance = atol * max(1.0, expected.abs().max().item())
        if error > tolerance:
            raise RuntimeError(f"prepared model differs from the original by {error:.2e} (> {tolerance:.1e})")
    else:
        agreement = (expected == actual).float().mean().item()
        if agreement < 0.999:
            raise RuntimeError(f"prepared model agrees with the original on only {agreement:.2%} of outputs")
    return prepared
