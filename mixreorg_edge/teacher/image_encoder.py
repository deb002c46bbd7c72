"""GroupViT-style image encoder, split into the pieces MixReorg's branches need.

Layout: stem -> `context_depth` patch-only layers (run on each image alone: the context of contextual mixing) ->
stage 1 ([patches; group tokens] layers, grouping) -> stage 2 (...) -> last stage (layers on the segments) -> norm.
The context layers are taken from stage 1's depth budget, so every MixReorg variant has the same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from .config import ImageEncoderConfig
from .grouping import GroupingBlock
from .stems import build_stem


@dataclass
class Grouped:
    """Output of the grouping stages for a batch of images."""

    segments: torch.Tensor  # (B, S, D) final segment features
    hard: list[torch.Tensor]  # per grouping stage, (B, L_in, G_out)
    soft: list[torch.Tensor]


def last_rows(block: Block, joint: torch.Tensor, count: int) -> torch.Tensor:
    """`block(joint)[:, -count:]` without computing the other rows' outputs (they still give keys and values): a
    timm Block (pre-norm multi-head self-attention, then the MLP) for its last `count` queries only."""
    attn = block.attn
    if attn.gate is not None or not isinstance(attn.norm, nn.Identity):
        raise ValueError("last_rows supports timm's plain Block attention (no gate, no scale norm)")
    normed = block.norm1(joint)
    batch, length, _ = normed.shape
    weight, bias = attn.qkv.weight, attn.qkv.bias
    width = attn.attn_dim
    query = F.linear(normed[:, -count:], weight[:width], None if bias is None else bias[:width])
    key_value = F.linear(normed, weight[width:], None if bias is None else bias[width:])
    query = attn.q_norm(query.view(batch, count, attn.num_heads, attn.head_dim).transpose(1, 2))
    key, value = key_value.view(batch, length, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(query, attn.k_norm(key), value, dropout_p=dropout)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(batch, count, width)))
    rows = joint[:, -count:] + block.drop_path1(block.ls1(out))
    return rows + block.drop_path2(block.ls2(block.mlp(block.norm2(rows))))


class GroupingStage(nn.Module):
    """Transformer layers over [tokens; group tokens] followed by a grouping block."""

    def __init__(self, cfg: ImageEncoderConfig, depth: int, num_groups: int, num_outputs: int) -> None:
        super().__init__()
        self.group_tokens = nn.Parameter(torch.zeros(1, num_groups, cfg.width))
        nn.init.trunc_normal_(self.group_tokens, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(depth))
        self.grouping = GroupingBlock(
            cfg.width, cfg.heads, num_groups, num_outputs, cfg.hard_assignment, cfg.gumbel, cfg.gumbel_tau
        )

    def start(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append this stage's group tokens: (B, L, D) -> (B, L + G, D)."""
        return torch.cat([tokens, self.group_tokens.expand(tokens.shape[0], -1, -1)], dim=1)

    def split(self, joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[tokens; groups] -> (tokens, groups)."""
        num_groups = self.group_tokens.shape[1]
        return joint[:, :-num_groups], joint[:, -num_groups:]

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        joint = self.start(tokens)
        for block in self.blocks:
            joint = block(joint)
        return self.grouping(*self.split(joint))


class GroupViTImageEncoder(nn.Module):
    """Image -> segment features, with the hooks MixReorg uses between stem, context layers and stage 1."""

    def __init__(self, cfg: ImageEncoderConfig, context_depth: int = 0) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.group_tokens) + 1 or len(cfg.group_tokens) != len(cfg.output_groups):
            raise ValueError("depths must have one entry more than group_tokens/output_groups")
        if not 0 <= context_depth <= cfg.depths[0]:  # all of stage 1: group tokens meet the patches when grouping
            raise ValueError(f"context_depth must be in [0, {cfg.depths[0]}], got {context_depth}")
        if cfg.width <= 0 or cfg.width % cfg.heads:
            raise ValueError(f"image width must be a positive multiple of its {cfg.heads} heads, got {cfg.width}")
        self.cfg = cfg
        self.grid = (cfg.image_size // cfg.patch_size, cfg.image_size // cfg.patch_size)
        self.stem = build_stem(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], cfg.width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.context_blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(context_depth))
        depths = [cfg.depths[0] - context_depth, *cfg.depths[1:-1]]
        self.stages = nn.ModuleList(
            GroupingStage(cfg, depth, g_in, g_out)
            for depth, g_in, g_out in zip(depths, cfg.group_tokens, cfg.output_groups)
        )
        self.last_blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.depths[-1]))
        self.norm = nn.LayerNorm(cfg.width)

    def token_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return image_size[0] // self.cfg.patch_size, image_size[1] // self.cfg.patch_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Stem + position embedding (interpolated for other input sizes): (B, 3, H, W) -> (B, L, D)."""
        x = self.stem(images)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        return x + self._pos_embed(tuple(grid))

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        pos = self.pos_embed.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)

    def context(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch-only layers that see each image on its own."""
        for block in self.context_blocks:
            tokens = block(tokens)
        return tokens

    @property
    def first_stage(self) -> GroupingStage:
        return self.stages[0]

    def finish(self, joint: torch.Tensor) -> Grouped:
        """Run everything from the first grouping block on, given stage 1's output [tokens; groups]."""
        tokens, groups = self.first_stage.split(joint)
        segments, hard, soft = self.first_stage.grouping(tokens, groups)
        hards, softs = [hard], [soft]
        for stage in self.stages[1:]:
            segments, hard, soft = stage(segments)
            hards.append(hard)
            softs.append(soft)
        for block in self.last_blocks:
            segments = block(segments)
        return Grouped(self.norm(segments), hards, softs)

    def stage_one(self, tokens: torch.Tensor) -> torch.Tensor:
        """Stage-1 layers over [tokens; group tokens]."""
        joint = self.first_stage.start(tokens)
        for block in self.first_stage.blocks:
            joint = block(joint)
        return joint

    def forward(self, images: torch.Tensor) -> Grouped:
        return self.finish(self.stage_one(self.context(self.embed(images))))

    def blocks_in_order(self) -> list[Block]:
        """All plain transformer layers, input to output (for initialising from a ViT checkpoint)."""
        blocks = list(self.context_blocks)
        for stage in self.stages:
            blocks.extend(stage.blocks)
        return blocks + list(self.last_blocks)
