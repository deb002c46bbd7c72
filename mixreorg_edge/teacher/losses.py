"""MixReorg's losses: image-text contrastive (original and restored images), mixed segmentation, and GroupViT's
multi-label contrastive loss on caption keywords."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised (N, E) image and text embeddings; pair i matches caption i."""
    logits = scale * image @ text.t()
    labels = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def mixed_segmentation_loss(
    token_embeddings: torch.Tensor, text: torch.Tensor, source: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Every token of a mixed image must pick its source image's caption among all captions of the batch.

    token_embeddings: (N, L, E), each token's (segment) embedding; text: (N, E); source: (N, L) caption index.
    """
    logits = scale * token_embeddings @ text.t()  # (N, L, N)
    return F.cross_entropy(logits.reshape(-1, text.shape[0]), source.reshape(-1).to(logits.device))


def multilabel_contrastive_loss(
    image: torch.Tensor, prompts: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """GroupViT's multi-label image-text contrastive loss over a batch's distinct keyword prompts.

    image: (N, E), or (N, L, E) token embeddings, where an image's similarity to a keyword is its best-matching
    token's (multiple-instance: a keyword is named when some token shows it); prompts: (U, E); all L2-normalised.
    targets: (N, U) 0/1, which image's caption named which keyword.
    Image -> prompts: cross-entropy against the uniform distribution over the image's keywords (images without
    keywords are left out); prompt -> images: the same over the images naming the keyword. Mean of both directions.
    """
    logits = scale * image @ prompts.t()
    if logits.dim() == 3:
        logits = logits.amax(dim=1)
    return 0.5 * (multilabel_cross_entropy(logits, targets) + multilabel_cross_entropy(logits.t(), targets.t()))


def multilabel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy between softmax(logits) and the uniform distribution over the row's
    positive (1) targets; rows without a positive target are left out. logits, targets: (rows, classes)."""
    named = targets.sum(dim=1) > 0
    uniform = targets[named] / targets[named].sum(dim=1, keepdim=True)
    return -(uniform * logits[named].log_softmax(dim=1)).sum(dim=1).mean()
