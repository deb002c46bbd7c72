"""The graphs whose latency the benchmarks compare, and their interleaved timing at one input size.

For every model: `deployed` (image -> labels: network + vocabulary head + upsampling + background rule) and
`network` (image -> embedding map); for a student also `backbone` (its timm backbone alone), the floor under any
student built on that backbone whatever its decoder and head cost."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distill.student import DenseStudent, EmbeddingModel, SegmentationModel
from ..export.prepare import prepare_for_inference
from ..vocab import Vocabulary, builtin_label_set
from .timing import count_gflops, count_parameters, measure_latencies

LATENCY_KEYS = {"deployed": "latency", "network": "network_latency", "backbone": "backbone_latency"}


class BackboneOnly(nn.Module):
    """A student's timm backbone alone: image -> its coarsest feature map (every stage runs)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)[-1]


def random_vocabulary(embed_dim: int) -> Vocabulary:
    """The synthetic-objects label set with random embeddings of `embed_dim`: a vocabulary head of the usual size,
    for timing (the vocabulary's values do not change the cost)."""
    labels = builtin_label_set("synthetic-objects")
    entries = len(labels.classes) - 1 + len(labels.background_words)
    return Vocabulary(labels.classes, labels.background_words,
                      F.normalize(torch.randn(entries, embed_dim), dim=-1), logit_scale=50.0)


def timing_graphs(model: nn.Module, size: int) -> tuple[dict[str, float], dict[str, nn.Module]]:
    """Params and GFLOPs at `size` x `size` of `model` behind a synthetic-objects vocabulary head (random embeddings
    of the model's dimension: the vocabulary's values do not change the cost), and its graphs to time, each
    inference-prepared (BatchNorm folded, re-parameterised, channels-last; see export.prepare) and checked against
    the original graph; parameters and GFLOPs are the original graph's."""
    example = torch.randn(1, 3, size, size)
    deployed = SegmentationModel(model, random_vocabulary(model.embed_dim), output="labels").eval()
    cost = {"params_m": round(count_parameters(model) / 1e6, 3),
            f"gflops_{size}": round(count_gflops(deployed, example), 2)}
    graphs: dict[str, nn.Module] = {"deployed": deployed, "network": EmbeddingModel(model)}
    if isinstance(model, DenseStudent):
        graphs["backbone"] = BackboneOnly(model.backbone)
    return cost, {kind: prepare_for_inference(graph, example) for kind, graph in graphs.items()}


def time_interleaved(graphs: dict[str, dict[str, nn.Module]], size: int, runs: int) -> dict[str, dict]:
    """Latency of every model's graphs at `size` x `size`, all timed round-robin in one loop (see
    timing.measure_latencies), so ratios compare timings taken under the same host conditions. Per model:
    `latency_{size}_ms` (deployed, median), `..._min_ms`, `latency_{size}_p90_ms`, the same for `network_latency_`
    and `backbone_latency_`, `latency_runs`, `threads`."""
    example = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    fns = {(name, kind): (lambda graph=graph: graph(example))
           for name, kinds in graphs.items() for kind, graph in kinds.items()}
    with torch.inference_mode():
        stats = measure_latencies(fns, warmup=5, runs=runs)
    results: dict[str, dict] = {}
    for (name, kind), timing in stats.items():
        row = results.setdefault(name, {"latency_runs": runs, "threads": timing["threads"]})
        key = f"{LATENCY_KEYS[kind]}_{size}"
        row[f"{key}_ms"], row[f"{key}_min_ms"] = timing["median_ms"], timing["min_ms"]
        if kind == "deployed":
            row[f"{key}_p90_ms"] = timing["p90_ms"]
    return results


def speedups(reference: dict, row: dict, size: int) -> dict[str, float]:
    """`row`'s speedups over `reference` (both timed in one `time_interleaved` call): the deployed graph's by median
    (`speedup`) and by minimum, the network's, and for a student `speedup_backbone_bound`: the reference's network
    over the student's backbone alone, which no decoder or head on that backbone can beat."""

    def ratio(reference_kind: str, row_kind: str, statistic: str = "") -> float:
        return round(reference[f"{reference_kind}_{size}{statistic}_ms"] / row[f"{row_kind}_{size}{statistic}_ms"], 2)

    result = {"speedup": ratio("latency", "latency"), "speedup_min": ratio("latency", "latency", "_min"),
              "speedup_network": ratio("network_latency", "network_latency")}
    if f"backbone_latency_{size}_ms" in row:
        result["speedup_backbone_bound"] = ratio("network_latency", "backbone_latency")
    return result
