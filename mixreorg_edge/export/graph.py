"""What gets exported: a run's dense network and the deployable graph built on it (`labels`, `scores` or
`embeddings` output), with the vocabulary baked into the head or shipped beside the artifact."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..calibration import with_run_calibration
from ..distill.student import EmbeddingModel, SegmentationModel
from ..runs import load_model, model_file, load_run_vocabulary, load_text_model
from ..vocab import LabelSet, Vocabulary, build_vocabulary

SIZE_MULTIPLE = 32  # the students' coarsest stride


class DenseGraph(nn.Module):
    """Any images -> embeddings module (such as a quantized graph of a network) as a dense model."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


class Float16Compute(nn.Module):
    """`graph` computing in float16 behind a float32 input and (floating) output, so an app feeds the same array."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.half_graph = copy.deepcopy(graph).half()  # not `graph`: GraphModule's own attribute when re-traced

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.half_graph(images.half())
        return out.float() if out.is_floating_point() else out


@dataclass
class Deployable:
    """A run's network (images -> embeddings), the vocabulary it is deployed with and the output kind."""

    run: Path
    config: dict[str, Any]
    network: nn.Module
    vocabulary: Vocabulary
    output: str

    def graph(self, network: nn.Module | None = None, upsampling: str = "interpolate") -> nn.Module:
        """The deployable graph on `network` (default: the run's own; a quantized copy goes here), its `labels`
        upsampled as `upsampling` says (see upsampling.py)."""
        dense = DenseGraph(network if network is not None else self.network)
        if self.output == "embeddings":
            return EmbeddingModel(dense).eval()
        return SegmentationModel(dense, self.vocabulary, output=self.output, upsampling=upsampling).eval()

    @property
    def description(self) -> dict[str, Any]:
        kind = self.config["kind"]
        name = self.config["student"]["student"] if kind == "student" else self.config["teacher"]["preset"]
        return {"kind": kind, "name": name, "run": str(self.run), "embed_dim": self.vocabulary.embed_dim,
                "weights_sha256": weights_digest(self.run)}


def weights_digest(run: Path) -> str:
    """SHA-256 of a run's weights file: what an artifact was exported from (a benchmark re-exports when it changes)."""
    return hashlib.sha256(model_file(run).read_bytes()).hexdigest()


def default_image_size(config: dict[str, Any]) -> int:
    """The model's own evaluation size: its protocol's window (64 for `toy` and its students, 448 for `vit-s`)."""
    return int(config["teacher"]["eval"]["window"])


def check_image_size(size: int) -> None:
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise ValueError(f"--imgsz must be a positive multiple of {SIZE_MULTIPLE}, got {size}")


def load_deployable(run: Path, output: str, labels: LabelSet, vocab: Path | None = None) -> Deployable:
    """Load `run` (a teacher or student run) with its vocabulary: the file `vocab` as it is, or `labels` embedded by
    the teacher's text encoder with the background bias the run was calibrated with for unrefined logits (what a
    deployed graph computes)."""
    model, config = load_model(run)
    if vocab is not None:
        vocabulary = load_run_vocabulary(model, config, vocab)
    else:
        text_model = load_text_model(model, config)
        vocabulary = build_vocabulary(text_model, labels.classes, labels.background_words,
                                      config["teacher"]["eval"]["templates"], labels.background_threshold)
        vocabulary = with_run_calibration(run, vocabulary, refinement_iterations=0)
    network = EmbeddingModel(model).eval()
    return Deployable(Path(run), config, network, vocabulary, output)
