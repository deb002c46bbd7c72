"""CLIP-style text encoder trained from scratch, with CLIP's BPE tokenizer (bundled with open_clip: no download)."""

from __future__ import annotations

from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer
from timm.models.vision_transformer import Block
from torch import nn

from .config import TextEncoderConfig


@lru_cache(maxsize=1)
def _bpe() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    """Texts -> (N, T) token ids (start, BPE tokens, end, zero padding), T <= context_length: padding columns past
    the longest text are dropped (exact under causal attention with end-of-text pooling); long texts are truncated."""
    tokens = _bpe()(texts, context_length=context_length)
    longest = int((tokens != 0).sum(dim=1).max())
    return tokens[:, :longest]


class TextEncoder(nn.Module):
    """Token ids -> one feature per text: the end-of-text token's (the highest id, as in CLIP) or the mean over the
    text's tokens, per `cfg.pooling`. Attention is causal, so padding never reaches the text's tokens."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        if cfg.pooling not in ("eot", "mean"):
            raise ValueError(f"unknown text pooling {cfg.pooling!r}; choose 'eot' or 'mean'")
        self.cfg = cfg
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.context_length, cfg.width))
        nn.init.normal_(self.token_embed.weight, std=cfg.token_init_std)
        nn.init.normal_(self.pos_embed, std=0.01)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(tokens) + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x, is_causal=True)
        x = self.norm(x)
        if self.cfg.pooling == "mean":
            mask = (tokens != 0).unsqueeze(-1).to(x.dtype)
            return (x * mask).sum(dim=1) / mask.sum(dim=1)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
