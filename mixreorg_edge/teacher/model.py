"""The MixReorg teacher: a GroupViT-style image encoder and a text encoder in one joint space, trained with
MixReorg's original, mixed and restored branches; at test time only the original branch runs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ..data.captions import with_article
from .config import TeacherConfig
from .grouping import compose_assignments, normalize
from .image_encoder import GroupViTImageEncoder, Grouped, last_rows
from .losses import contrastive_loss, mixed_segmentation_loss, multilabel_contrastive_loss
from .mixing import MixPlan, make_plan, mix_pixels, mix_tokens, mixed_batch_size, restore_tokens
from .sync_norm import batch_norm
from .text_encoder import TextEncoder, tokenize


def _projection(width: int, embed_dim: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(width, embed_dim)
    if layers == 2:
        return Mlp(width, width * 4, embed_dim)
    raise ValueError(f"projection_layers must be 1 or 2, got {layers}")


class MixReorgTeacher(nn.Module):
    """Image and text encoders with projections into a shared embedding space and a learnable temperature."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mixing = cfg.mixing
        self.image_encoder = GroupViTImageEncoder(cfg.image, context_depth=mixing.context_depth)
        self.text_encoder = TextEncoder(cfg.text)
        self.image_proj = _projection(cfg.image.width, cfg.embed_dim, cfg.projection_layers)
        self.text_proj = _projection(cfg.text.width, cfg.embed_dim, cfg.projection_layers)
        self.text_norm = nn.BatchNorm1d(cfg.embed_dim, affine=False) if cfg.text_batchnorm else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        if cfg.readout not in ("group", "token"):
            raise ValueError(f"unknown readout {cfg.readout!r}; choose 'group' or 'token'")
        if cfg.keyword_pooling not in ("image", "token"):
            raise ValueError(f"unknown keyword pooling {cfg.keyword_pooling!r}; choose 'image' or 'token'")
        if cfg.keyword_pooling == "token" and cfg.readout != "token":
            raise ValueError("keyword_pooling 'token' needs the 'token' readout")
        self.token_norm = nn.LayerNorm(cfg.image.width) if cfg.readout == "token" else None
        self.progressive_gates: nn.ModuleList | None = None
        if mixing.enabled and mixing.progressive:
            gates = [nn.Linear(cfg.image.width, cfg.image.width) for _ in self.image_encoder.first_stage.blocks]
            for gate in gates:  # zero-initialised: progressive mixing starts as the identity
                nn.init.zeros_(gate.weight)
                nn.init.zeros_(gate.bias)
            self.progressive_gates = nn.ModuleList(gates)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def scale(self) -> torch.Tensor:
        """Logit scale exp(t), capped at `max_logit_scale`."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    # --- text -------------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return tokenize(texts, self.cfg.text.context_length).to(self.logit_scale.device)

    def keyword_prompt_tokens(self, keywords: list[str]) -> torch.Tensor:
        """Token ids of "a photo of a {keyword}." for each keyword (the multi-label loss's prompts)."""
        return self.tokenize([f"a photo of {with_article(word)}." for word in keywords])

    def encode_text(self, tokens: torch.Tensor, track_stats: bool = True, across_ranks: bool = False) -> torch.Tensor:
        """(N, T) token ids -> (N, E) L2-normalised text embeddings.

        With `text_batchnorm`, training uses the batch's statistics (a lone text: the running ones; `across_ranks`:
        the global batch's under torchrun) and, when `track_stats`, updates the running statistics test time uses."""
        text = self.text_proj(self.text_encoder(tokens))
        if self.text_norm is not None:
            norm = self.text_norm
            batch_stats = self.training and text.shape[0] > 1
            track = not batch_stats or track_stats
            text = batch_norm(text, norm.running_mean if track else None, norm.running_var if track else None,
                              batch_stats, norm.momentum, norm.eps, across_ranks)
        return normalize(text)

    # --- image ------------------------------------------------------------------------------------------
    def image_embedding(self, grouped: Grouped) -> torch.Tensor:
        """Mean of the final segments, projected: (B, E), L2-normalised."""
        return normalize(self.image_proj(grouped.segments.mean(dim=1)))

    def segment_embeddings(self, grouped: Grouped) -> torch.Tensor:
        """Each final segment projected into the joint space: (B, S, E), L2-normalised."""
        return normalize(self.image_proj(grouped.segments))

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Stage-1 output tokens projected one by one (the "token" readout): (B, L, E), L2-normalised."""
        return normalize(self.image_proj(self.token_norm(tokens)))

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, E, H/p, W/p) per-token embeddings.

        "group" readout: each token takes the embedding of the final segment it belongs to most (the argmax of the
        stage-composed soft assignment, GroupViT's one-hot readout, here per token rather than per upsampled
        pixel). "token" readout: each stage-1 output token projected on its own (the grouping stages are not
        needed and not run).
        """
        encoder = self.image_encoder
        if self.cfg.readout == "token":
            joint = encoder.stage_one(encoder.context(encoder.embed(images)))
            dense = self.token_embeddings(encoder.first_stage.split(joint)[0])
        else:
            grouped = encoder(images)
            assignment = compose_assignments(grouped.soft)  # (B, L, G)
            one_hot = F.one_hot(assignment.argmax(-1), assignment.shape[-1]).to(assignment.dtype)
            dense = one_hot @ self.segment_embeddings(grouped)  # (B, L, E)
        h, w = encoder.token_grid(tuple(images.shape[-2:]))
        return dense.transpose(1, 2).reshape(images.shape[0], -1, h, w)

    # --- training ---------------------------------------------------------------------------------------
    def training_losses(
        self, images: torch.Tensor, tokens: torch.Tensor, keywords: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """All enabled MixReorg losses for a batch of normalised images and their caption tokens; `keywords` =
        (keyword prompt tokens (U, T), (N, U) 0/1 targets) adds the multi-label loss when `keyword_prompts` > 0.

        Returns the weighted `loss` and each term. Randomness (mixing plans, Gumbel noise) uses torch's global RNG.
        """
        mixing = self.cfg.mixing
        # Test-time prompts look like the keyword prompts, not like captions: those set the running statistics.
        text = self.encode_text(tokens, track_stats=self.cfg.keyword_prompts == 0, across_ranks=True)
        scale = self.scale()
        encoder = self.image_encoder
        tokens_orig = encoder.context(encoder.embed(images))
        if not mixing.enabled:
            joint_orig = encoder.stage_one(tokens_orig)
            image = self.image_embedding(encoder.finish(joint_orig))
            term = contrastive_loss(image, text, scale)
            terms = {"loss": mixing.contrastive_weight * term, "contrastive": term}
            return self._with_keywords(terms, image, encoder.first_stage.split(joint_orig)[0], keywords)

        mixed = mixed_batch_size(images.shape[0], mixing.images, mixing.fraction)
        plan = make_plan(mixed, encoder.token_grid(tuple(images.shape[-2:])), mixing.images, mixing.block)
        plan = MixPlan(plan.source.to(images.device))
        if mixing.contextual:
            tokens_mixed = mix_tokens(tokens_orig[:mixed], plan)
        else:
            tokens_mixed = encoder.context(encoder.embed(mix_pixels(images[:mixed], plan, self.cfg.image.patch_size)))
        joint_orig, joint_mixed, groups_restored = self._first_stage_layers(
            tokens_orig, tokens_mixed, plan if mixing.restoration else None)

        stage = encoder.first_stage
        mixed_tokens = stage.split(joint_mixed)[0]
        image = self.image_embedding(encoder.finish(joint_orig))
        terms = {"contrastive": contrastive_loss(image, text, scale)}
        if self.cfg.readout == "token":
            token_embeddings = self.token_embeddings(mixed_tokens)
        else:
            grouped_mixed = encoder.finish(joint_mixed)
            token_embeddings = compose_assignments(grouped_mixed.hard) @ self.segment_embeddings(grouped_mixed)
        terms["segmentation"] = mixed_segmentation_loss(token_embeddings, text, plan.source, scale)
        loss = mixing.contrastive_weight * terms["contrastive"] + mixing.seg_weight * terms["segmentation"]
        if mixing.restoration:
            # The restored images regroup with group tokens of their own that went through the stage-1 layers beside
            # them: nothing of the original branch leaks in.
            grouped_restored = encoder.finish(torch.cat([restore_tokens(mixed_tokens, plan), groups_restored], dim=1))
            terms["restoration"] = contrastive_loss(self.image_embedding(grouped_restored), text[:mixed], scale)
            loss = loss + mixing.restore_weight * terms["restoration"]
        return self._with_keywords({"loss": loss, **terms}, image, stage.split(joint_orig)[0], keywords)

    def _with_keywords(
        self,
        terms: dict[str, torch.Tensor],
        image: torch.Tensor,
        stage_one_tokens: torch.Tensor,
        keywords: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """Add the multi-label keyword loss of the original images (image embeddings or, with "token" keyword
        pooling, their stage-1 tokens' embeddings), when enabled."""
        if self.cfg.keyword_prompts == 0:
            return terms
        if keywords is None:
            raise ValueError("keyword_prompts > 0 needs the batch's keyword prompts and targets")
        prompt_tokens, targets = keywords
        if targets.shape[1] == 0:  # no caption of this batch named a keyword
            return terms
        if self.cfg.keyword_pooling == "token":
            image = self.token_embeddings(stage_one_tokens)
        term = multilabel_contrastive_loss(image, self.encode_text(prompt_tokens), targets.to(image.device), self.scale())
        return {**terms, "loss": terms["loss"] + self.cfg.keyword_weight * term, "keywords": term}

    def _first_stage_layers(
        self, tokens_orig: torch.Tensor, tokens_mixed: torch.Tensor, plan: MixPlan | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stage-1 layers on the original and mixed images in lock-step; with progressive mixing each mixed image's
        patch tokens are enhanced, before every layer, by the mean original feature of its mix group (the mixed
        images are made of the first `len(tokens_mixed)` originals).

        Given the mixing `plan` (restoration), a third set of group tokens goes through the same layers beside the
        restored images, i.e. each layer's input mixed patch tokens put back in source order, as the original
        branch's group tokens go beside its patches; only those group tokens are kept, (N_mixed, G, D), third in the
        returned (joint_orig, joint_mixed, groups_restored), else None."""
        stage = self.image_encoder.first_stage
        group_size = self.cfg.mixing.images
        num_tokens, mixed = tokens_orig.shape[1], tokens_mixed.shape[0]
        joint_orig, joint_mixed = stage.start(tokens_orig), stage.start(tokens_mixed)
        groups_restored = None if plan is None else stage.split(joint_mixed)[1]
        for index, block in enumerate(stage.blocks):
            if self.progressive_gates is not None:
                context = joint_orig[:mixed, :num_tokens].mean(dim=1)
                context = context.view(-1, group_size, context.shape[-1]).mean(dim=1)
                delta = self.progressive_gates[index](context).repeat_interleave(group_size, dim=0)
                joint_mixed = torch.cat(
                    [joint_mixed[:, :num_tokens] + delta[:, None], joint_mixed[:, num_tokens:]], dim=1
                )
            if groups_restored is not None:
                restored = torch.cat([restore_tokens(joint_mixed[:, :num_tokens], plan), groups_restored], dim=1)
                groups_restored = last_rows(block, restored, groups_restored.shape[1])
            joint_orig, joint_mixed = block(joint_orig), block(joint_mixed)
        return joint_orig, joint_mixed, groups_restored
