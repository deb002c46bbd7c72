"""GroupViT's grouping block: group tokens attend to the tokens, every token is assigned to one group (hard
Gumbel-softmax with a straight-through gradient), and each group becomes the mean of its tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


def gumbel_hard_assign(logits: torch.Tensor, dim: int, tau: float, gumbel: bool) -> torch.Tensor:
    """One-hot argmax along `dim` with the (noisy) softmax's gradient (straight-through)."""
    if gumbel:
        noise = -torch.empty_like(logits).exponential_().log()
        logits = logits + noise
    soft = (logits / tau).softmax(dim)
    index = soft.argmax(dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return hard - soft.detach() + soft


class GroupingBlock(nn.Module):
    """Merge L tokens into `num_outputs` segments guided by `num_groups` group tokens.

    Returns the segment tokens (B, num_outputs, D) and the assignment of tokens to segments, hard (used for
    training and for the segmentation loss) and soft (used to read out dense predictions, as GroupViT does).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        num_groups: int,
        num_outputs: int,
        hard: bool = True,
        gumbel: bool = True,
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        self.hard, self.gumbel, self.tau = hard, gumbel, tau
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_groups = nn.LayerNorm(dim)
        self.group_mixer = Mlp(num_groups, num_groups * 2, num_outputs) if num_groups != num_outputs else None
        self.norm_query = nn.LayerNorm(dim)
        self.pre_assign = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_assign = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.norm_tokens(tokens)
        groups = self.norm_groups(groups)
        if self.group_mixer is not None:
            groups = self.group_mixer(groups.transpose(1, 2)).transpose(1, 2)
        query = self.norm_query(groups)
        groups = groups + self.pre_assign(query, tokens, tokens, need_weights=False)[0]
        logits = self.to_q(self.norm_assign(groups)) @ self.to_k(tokens).transpose(1, 2) * self.scale  # (B, G, L)
        soft = logits.softmax(dim=1)
        if self.hard:
            assign = gumbel_hard_assign(logits, dim=1, tau=self.tau, gumbel=self.gumbel and self.training)
        else:
            assign = soft
        weights = assign / (assign.sum(dim=-1, keepdim=True) + 1.0)
        segments = self.proj(weights @ tokens) + groups
        segments = segments + self.mlp(self.norm_out(segments))
        return segments, assign.transpose(1, 2), soft.transpose(1, 2)


def compose_assignments(assignments: list[torch.Tensor]) -> torch.Tensor:
    """Chain per-stage (B, L_i, G_i) assignments into one (B, L_0, G_last) token-to-final-segment map."""
    total = assignments[0]
    for nxt in assignments[1:]:
        total = total @ nxt
    return total


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension."""
    return F.normalize(x, dim=-1)
