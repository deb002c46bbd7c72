"""The vocabulary head: joint-space embeddings -> class logits (a 1x1 convolution whose weights are the vocabulary
embeddings times the logit scale) -> label-set scores with the background rule. Only tensor ops: it exports."""

from __future__ import annotations

import math

import torch
from torch import nn

from .vocab import Vocabulary


class VocabularyHead(nn.Module):
    """`logits` on (B, E, h, w) embeddings (the background words' logits include the vocabulary's calibrated
    background bias); `label_scores` or `labels` on (upsampled) logits; `forward` = logits +
    label_scores.

    Background rule: with background words, the background class scores the total probability of its words
    (it wins a pixel when they jointly outweigh every foreground class); without them it scores a constant
    threshold (GroupViT's rule: background where no foreground probability reaches the threshold).
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

    def label_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V, H, W) vocabulary logits -> (B, C, H, W) probabilities over the label set, in label order."""
        probs = logits.softmax(dim=1)
        foreground = probs[:, : self.num_foreground]
        if self.background_index is None:
            return foreground
        if self.num_background_words:
            background = probs[:, self.num_foreground :].sum(dim=1, keepdim=True)
        else:  # no background words: the softmax above is already over the foreground classes alone
            background = torch.full_like(foreground[:, :1], self.background_threshold)
        index = self.background_index
        return torch.cat([foreground[:, :index], background, foreground[:, index:]], dim=1)

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V, H, W) vocabulary logits -> (B, H, W) int64 label indices: the argmax of `label_scores(logits)`
        without normalising every pixel's distribution (the softmax shares one denominator, so comparing
        log-probabilities needs only a max over the foreground logits and a logsumexp over the background words). Ties
        between foreground classes go to the lower index, as with argmax; where the background's and the best
        foreground's scores agree to float rounding, the two computations may decide differently."""
        foreground = logits[:, : self.num_foreground]
        # max(dim).indices, not argmax(dim): the same result, but PyTorch's CPU argmax over the channel axis of an
        # NCHW tensor is ~4x slower (18 vs 4 ms for 13x448x448 on 2 cores).
        best, best_index = foreground.max(dim=1)
        index = self.background_index
        if index is None:
            return best_index
        if self.num_background_words:
            background = logits[:, self.num_foreground :].logsumexp(dim=1)
        else:  # p(best) < threshold  <=>  best < logsumexp(foreground) + log(threshold)
            log_threshold = math.log(self.background_threshold) if self.background_threshold > 0 else -math.inf
            background = foreground.logsumexp(dim=1) + log_threshold
        labels = best_index + (best_index >= index).long()  # foreground index -> label index
        return torch.where(background > best, index, labels)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.label_scores(self.logits(embeddings))
