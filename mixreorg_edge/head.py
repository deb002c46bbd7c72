"""The vocabulary head: joint-space embeddings -> class logits (a 1x1 convolution whose weights are the vocabulary
embeddings times the logit scale) -> label-set scores with the background rule. Only tensor ops: it exports."""

from __future__ import annotations

import math

import torch
from torch import nn

from .vocab import Vocabulary


TOP_CLASSES = 5  # GroupViT's fixed-threshold rule keeps each image's 5 best classes


def top_classes(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) scores -> (B, N) bool, True for each row's k highest (ties to the lower index). Comparisons only, no
    topk, so every export target takes it."""
    index = torch.arange(scores.shape[1], device=scores.device)
    above = scores[:, None, :] > scores[:, :, None]  # [b, i, j]: class j scores above class i
    tied_before = (scores[:, None, :] == scores[:, :, None]) & (index[None, :] < index[:, None])[None]
    return (above | tied_before).sum(dim=2) < k


class VocabularyHead(nn.Module):
    """`logits` on (B, E, h, w) embeddings (the background words' logits include the vocabulary's calibrated
    background bias); `label_scores` or `labels` on (upsampled) logits; `forward` = logits +
    label_scores.

    Background rule: with background words, the background class scores the total probability of its words
    (it wins a pixel when they jointly outweigh every foreground class). Without them, GroupViT's rule for a fixed
    threshold t (`segmentation/evaluation/group_vit_seg.py`): each image keeps its `TOP_CLASSES` best foreground
    classes (ranked by the mean of its logits over its pixels: the dense stand-in for GroupViT's image embedding), a
    pixel's score for class c is softmax over the kept classes times softmax over all foreground classes, and
    background wins where the best score is below min(t, the image's best score anywhere), so the image's best
    location is never background. "The image" is the logits given, or `image_logits` when given (eval: the whole
    image at the protocol's resized scale, where GroupViT takes each sliding window). A label set without a background
    class is the argmax of its logits.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
        super().__init__()
        weight = vocabulary.embeddings * vocabulary.logit_scale
        self.classifier = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1)
        self.classifier.weight.data.copy_(weight[:, :, None, None])
        self.num_foreground = len(vocabulary.foreground)
        bias = torch.zeros(weight.shape[0])
        bias[self.num_foreground :] = vocabulary.background_bias
        self.classifier.bias.data.copy_(bias)
        self.num_background_words = len(vocabulary.background_words)
        self.background_index = vocabulary.background_index
        self.background_threshold = vocabulary.background_threshold

    @property
    def fixed_threshold(self) -> bool:
        """True when the background is decided by GroupViT's fixed-threshold rule (a background class, no words)."""
        return self.background_index is not None and not self.num_background_words

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)

    def shift_background(self, logits: torch.Tensor, bias: float) -> torch.Tensor:
        """(B, V, H, W) logits with `bias` more on every background word: what a vocabulary's background bias does
        in the 1x1 convolution, applied to logits computed once (a bias sweep needs one forward pass)."""
        if not bias:
            return logits
        if not self.num_background_words:
            raise ValueError("a background bias needs background words (it is added to their logits)")
        shift = torch.zeros(logits.shape[1], 1, 1, dtype=logits.dtype, device=logits.device)
        shift[self.num_foreground :] = bias
        return logits + shift

    def label_scores(self, logits: torch.Tensor, image_logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, H, W) vocabulary logits -> (B, C, H, W) scores over the label set, in label order: probabilities;
        under the fixed-threshold rule GroupViT's outputs (each class's product of softmaxes, and the background 1
        where it wins, else 0)."""
        if self.fixed_threshold:
            scores, background = self._thresholded(logits, image_logits)
            return self._insert_background(scores, background.to(scores.dtype)[:, None])
        probs = logits.softmax(dim=1)
        foreground = probs[:, : self.num_foreground]
        if self.background_index is None:
            return foreground
        return self._insert_background(foreground, probs[:, self.num_foreground :].sum(dim=1, keepdim=True))

    def _insert_background(self, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        index = self.background_index
        return torch.cat([foreground[:, :index], background, foreground[:, index:]], dim=1)

    def _groupvit_scores(self, foreground: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Softmax over the `kept` (B, N) classes times softmax over all: (B, N, H, W), 0 for the others."""
        restricted = foreground.masked_fill(~kept[:, :, None, None], -math.inf).softmax(dim=1)
        return restricted * foreground.softmax(dim=1)

    def _thresholded(
        self, logits: torch.Tensor, image_logits: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GroupViT's fixed-threshold rule: (B, N, H, W) foreground scores and the (B, H, W) background mask."""
        image = (logits if image_logits is None else image_logits)[:, : self.num_foreground]
        kept = top_classes(image.mean(dim=(2, 3)), min(TOP_CLASSES, self.num_foreground))
        image_best = self._groupvit_scores(image, kept).amax(dim=(1, 2, 3))
        threshold = image_best.clamp(max=self.background_threshold)[:, None, None]
        scores = self._groupvit_scores(logits[:, : self.num_foreground], kept)
        return scores, scores.amax(dim=1) < threshold

    def labels(self, logits: torch.Tensor, image_logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, H, W) vocabulary logits -> (B, H, W) int64 label indices: the argmax of
        `label_scores(logits, image_logits)`, with background words without normalising every pixel's distribution
        (the softmax shares one denominator: the background wins where its words' logsumexp exceeds the best
        foreground logit, i.e. where the sum of exp(word logit - best) exceeds 1, which needs no logarithm and runs
        faster in eager PyTorch and ONNX Runtime). Ties between foreground classes go to the lower index, as
        with argmax; where the background's and the best foreground's scores agree to float rounding, the two
        computations may decide differently."""
        if self.fixed_threshold:
            scores, background = self._thresholded(logits, image_logits)
            best_index = scores.max(dim=1).indices
        else:
            # max(dim).indices, not argmax(dim): the same result, but PyTorch's CPU argmax over the channel axis of an
            # NCHW tensor is ~4x slower (18 vs 4 ms for 13x448x448 on 2 cores).
            best, best_index = logits[:, : self.num_foreground].max(dim=1)
            if self.background_index is None:
                return best_index
            background = (logits[:, self.num_foreground :] - best[:, None]).exp().sum(dim=1) > 1
        labels = best_index + (best_index >= self.background_index).long()  # foreground index -> label index
        return torch.where(background, self.background_index, labels)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.label_scores(self.logits(embeddings))
