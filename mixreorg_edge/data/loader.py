"""Caption batches decoded by DataLoader worker processes, so a GPU is not kept waiting for JPEG decoding; each batch
is still `CaptionBatches.batch(step)`, so runs are the same with any number of workers."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .shards import CaptionBatches


class _StepBatches(Dataset):
    """Item `step` is that step's batch, with the corrupt samples the worker met while decoding it."""

    def __init__(self, batches: CaptionBatches) -> None:
        self.batches = batches

    def __getitem__(self, step: int) -> tuple[int, torch.Tensor, list[str], list[int]]:
        before = set(self.batches.corrupt_indices)
        images, captions = self.batches.batch(step)
        return step, images, captions, sorted(self.batches.corrupt_indices - before)


class WorkerBatches:
    """`batch(step)` for the steps `start`, `start + 1`, ... in that order, decoded ahead by `workers` processes
    (two batches each); corrupt samples they meet are counted in `batches`."""

    def __init__(self, batches: CaptionBatches, start: int, workers: int, pin_memory: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"DataLoader workers must be at least 1, got {workers}")
        self.batches = batches
        # A generator of its own: the workers' seeds are not drawn from torch's global RNG, the model's stream
        loader: DataLoader[Any] = DataLoader(_StepBatches(batches), batch_size=None, sampler=itertools.count(start),
                                             num_workers=workers, pin_memory=pin_memory, generator=torch.Generator())
        self._batches = iter(loader)

    def close(self) -> None:
        """Stop the worker processes now, not whenever the iterator happens to be garbage-collected (an iterator kept
        alive by a reference cycle, e.g. an exception's traceback, kept its forked workers running)."""
        self._batches._shutdown_workers()

    def __enter__(self) -> "WorkerBatches":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        decoded, images, captions, corrupt = next(self._batches)
        if decoded != step:
            raise RuntimeError(f"asked for the batch of step {step}, the workers decoded step {decoded}")
        self.batches.note_corrupt(corrupt)
        return images, captions
