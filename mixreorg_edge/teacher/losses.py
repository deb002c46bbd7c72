"""MixReorg's losses: image-text contrastive (original and restored images) and mixed segmentation."""

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
