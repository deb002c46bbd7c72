"""Data-parallel training across processes started by `torchrun`: the process group, the rank's place in it and the
few collectives training needs. Outside torchrun (no WORLD_SIZE in the environment) everything here is the identity
of a one-process world, so one code path serves 1 and N processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's rank among `size` processes, and its GPU index on its node (`local_rank`)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The current world: the initialised process group's, else a one-process world."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


@contextmanager
def process_group(timeout_minutes: float = 30.0) -> Iterator[World]:
    """Join the process group torchrun describes in the environment (NCCL with CUDA, else gloo) for the duration;
    without torchrun, or when a group already exists, nothing is created or torn down."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        yield world()
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    try:
        yield world()
    finally:
        dist.destroy_process_group()


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient and keeps this rank's rows (an all-reduce:
    `torch.distributed.nn.functional.all_gather`'s all-to-all backward gave wrong gradients on gloo here)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]


class _SumAcrossRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every rank's sum depends on every rank's input."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.detach().clone().contiguous()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's `tensor` concatenated along dim 0 in rank order, with gradients flowing back to each rank's rows
    (open_clip's `gather_features`), and the offset of this rank's rows. Every rank must give the same shape."""
    current = world()
    if current.size == 1:
        return tensor, 0
    return _GatherRows.apply(tensor), current.rank * tensor.shape[0]


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `tensor`, differentiable (gradients reach every rank's input)."""
    return tensor if world().size == 1 else _SumAcrossRanks.apply(tensor)


def gather_objects(obj: T) -> list[T]:
    """Every rank's picklable `obj`, in rank order."""
    if world().size == 1:
        return [obj]
    gathered: list[Any] = [None] * world().size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def on_main(compute: Callable[[], T]) -> T:
    """`compute()` on rank 0 alone (writing files, building a cache), its result given to every rank; an error there
    is raised on every rank, so none waits for a rank that has failed."""
    if world().size == 1:
        return compute()
    outcome: list[Any] = [None]
    if world().is_main:
        try:
            outcome[0] = (True, compute())
        except Exception as error:  # noqa: BLE001 - sent to the other ranks, then raised everywhere
            outcome[0] = (False, error)
    dist.broadcast_object_list(outcome, src=0)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
