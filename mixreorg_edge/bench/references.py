"""The benchmark's PyTorch eager rows, built inside a benchmark child (see worker.py): a run's deployed graph
(labels out, the vocabulary of the benchmarked label set), or the paper-size `vit-s` teacher with fresh weights,
whose cost and not whose labels matter. Each is inference-prepared (export.prepare) as the latency benchmarks time
eager graphs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

PAPER_TEACHER = "teacher-vit-s"


def eager_runner(run: str | None, imgsz: int, output: str, classes: Sequence[str], background_words: Sequence[str],
                 background_threshold: float | None, threads: int | None = None):
    """Images (a float32 array) -> `output` (labels or scores), by `run`'s deployed graph in PyTorch eager on
    `threads` threads; with `run` None, by the `vit-s` teacher architecture with fresh weights (seed 0) and a random
    vocabulary."""
    from ..distill.student import SegmentationModel
    from ..export.graph import load_deployable
    from ..export.prepare import prepare_for_inference
    from ..vocab import LabelSet
    from .graphs import random_vocabulary

    if threads is not None:
        torch.set_num_threads(threads)
    if run is None:
        from ..teacher.model import MixReorgTeacher
        from ..teacher.presets import get_preset

        torch.manual_seed(0)
        teacher = MixReorgTeacher(get_preset("vit-s")[0])
        graph = SegmentationModel(teacher, random_vocabulary(teacher.embed_dim), output=output)
    else:
        labels = LabelSet(list(classes), list(background_words), background_threshold)
        graph = load_deployable(Path(run), output, labels).graph()
    graph = prepare_for_inference(graph.eval(), torch.zeros(1, 3, imgsz, imgsz))

    @torch.inference_mode()
    def run_graph(images: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(np.ascontiguousarray(images)).contiguous(memory_format=torch.channels_last)
        return graph(inputs).numpy()

    return run_graph
