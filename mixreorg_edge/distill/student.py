"""Dense students (backbone + decoder, the DenseModel protocol) and the deployable graphs built on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import config_from_dict
from ..head import VocabularyHead
from ..upsampling import UPSAMPLING, phases_to_pixels, subpixel_bilinear, upsampling_factor
from ..vocab import Vocabulary
from .decoder import FPNDecoder
from .students import create_backbone, parse_student

OUTPUTS = ("scores", "labels")


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student; `image_size` records the size it was distilled at (its teacher's
    training size; a student runs at any size that is a multiple of its backbone's stride)."""

    student: str = "mobilevit"  # "family" or "family:size", see students.FAMILIES
    embed_dim: int = 256  # the teacher's joint-space dimension E
    decoder_width: int = 64
    image_size: int = 448

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        return config_from_dict(cls, data)


class DenseStudent(nn.Module):
    """timm backbone + FPN decoder: normalised images -> (B, E, H/8, W/8) unit-norm joint-space embeddings."""

    def __init__(self, cfg: StudentConfig, backbone_weights: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = parse_student(cfg.student)
        self.backbone = create_backbone(self.spec, backbone_weights)
        self.decoder = FPNDecoder(self.backbone.feature_info.channels(), cfg.embed_dim, cfg.decoder_width)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images (H, W multiples of 32) -> (B, E, H/8, W/8)."""
        return self.decoder(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_dense(images)


def _check_dense_model(model: nn.Module) -> None:
    if not callable(getattr(model, "encode_dense", None)):
        raise TypeError(f"{type(model).__name__} has no encode_dense(images); it is not a DenseModel")


class SegmentationModel(nn.Module):
    """Deployable segmenter with a baked vocabulary: dense embeddings -> vocabulary logits (1x1 conv) -> bilinear
    upsample to the input size -> label-set scores (background rule).

    `output="scores"`: (B, C, H, W) label-set scores (probabilities; GroupViT's scores under a fixed background
    threshold, see head.py); `output="labels"`: (B, H, W) int64 argmax. `upsampling="subpixel"` computes the same
    labels with the upsample as a convolution into sub-pixel phases (see upsampling.py), which some runtimes run
    faster; it applies to `labels` at an integer factor, the rest uses interpolate."""

    def __init__(self, model: nn.Module, vocabulary: Vocabulary, output: str = "scores",
                 upsampling: str = "interpolate") -> None:
        super().__init__()
        _check_dense_model(model)
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUTS)}")
        if upsampling not in UPSAMPLING:
            raise ValueError(f"unknown upsampling {upsampling!r}; choose one of: {', '.join(UPSAMPLING)}")
        self.model = model
        self.head = VocabularyHead(vocabulary)
        self.output = output
        self.upsampling = upsampling

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head.logits(self.model.encode_dense(images))
        size = images.shape[-2:]
        factor = upsampling_factor(logits.shape[-2:], size)
        if self.output == "labels" and self.upsampling == "subpixel" and factor:
            return phases_to_pixels(self.head.labels(subpixel_bilinear(logits, factor)), factor)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return self.head.labels(logits) if self.output == "labels" else self.head.label_scores(logits)


class EmbeddingModel(nn.Module):
    """Vocabulary-swappable deployable graph: images -> (B, E, h, w) embeddings; the app applies a vocabulary."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_dense_model(model)
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_dense(images)
