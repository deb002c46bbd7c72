"""MixReorg's losses: image-text contrastive (original and restored images), mixed segmentation, and GroupViT's
multi-label contrastive loss on caption keywords.

Under data parallelism (torchrun) the negatives come from every rank: embeddings are gathered with gradients and each
rank computes the loss rows of its own samples (open_clip's `local_loss`), so the mean over ranks, which
DistributedDataParallel's gradient averaging optimises, is the loss of the global batch in one process."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import gather_rows


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised (N, E) image and text embeddings; pair i matches caption i. The rows
    of this rank's images against every rank's captions, and of its captions against every rank's images."""
    all_images, offset = gather_rows(image)
    all_texts, _ = gather_rows(text)
    labels = offset + torch.arange(image.shape[0], device=image.device)
    image_to_text = scale * image @ all_texts.t()
    text_to_image = (scale * all_images @ text.t()).t()
    return 0.5 * (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels))


def mixed_segmentation_loss(
    token_embeddings: torch.Tensor, text: torch.Tensor, source: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Every token of a mixed image must pick its source image's caption among all captions of the (global) batch.

    token_embeddings: (N, L, E), each token's (segment) embedding; text: (N, E); source: (N, L) caption index within
    this rank's batch (mixing groups form within a rank).
    """
    all_texts, offset = gather_rows(text)
    logits = scale * token_embeddings @ all_texts.t()  # (N, L, N x ranks)
    return F.cross_entropy(logits.reshape(-1, all_texts.shape[0]), offset + source.reshape(-1).to(logits.device))


def multilabel_contrastive_loss(
    image: torch.Tensor, prompts: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """GroupViT's multi-label image-text contrastive loss over a batch's distinct keyword prompts.

    image: (N, E), or (N, L, E) token embeddings, where an image's similarity to a keyword is its best-matching
    token's (multiple-instance: a keyword is named when some token shows it); prompts: (U, E); all L2-normalised.
    targets: (N, U) 0/1, which image's caption named which keyword.
    Image -> prompts: cross-entropy against the uniform distribution over the image's keywords (images without
    keywords are left out); prompt -> images: the same over the images naming the keyword. Mean of both directions.
    Across ranks the prompts must be the same (the global batch's keywords): each rank's logit rows are gathered.
    """
    logits = scale * image @ prompts.t()
    if logits.dim() == 3:
        logits = logits.amax(dim=1)
    logits, targets = gather_rows(logits)[0], gather_rows(targets)[0]
    return 0.5 * (multilabel_cross_entropy(logits, targets) + multilabel_cross_entropy(logits.t(), targets.t()))


def multilabel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy between softmax(logits) and the uniform distribution over the row's
    positive (1) targets; rows without a positive target are left out. logits, targets: (rows, classes)."""
    named = targets.sum(dim=1) > 0
    uniform = targets[named] / targets[named].sum(dim=1, keepdim=True)
    return -(uniform * logits[named].log_softmax(dim=1)).sum(dim=1).mean()
