"""Losses under data parallelism: two gloo processes, each with half the batch, compute the one-process loss of the
whole batch (negatives from every rank) and, once DistributedDataParallel averages, its gradients."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mixreorg_edge.teacher.losses import contrastive_loss, mixed_segmentation_loss, multilabel_contrastive_loss
from mixreorg_edge.teacher.sync_norm import batch_norm

WORLD = 2
N, L, E, U = 8, 5, 6, 4  # global batch, tokens, embedding width, keyword prompts


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normed = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    source = torch.stack([torch.randperm(2, generator=g) for _ in range(L)], dim=1).repeat(N // 2, 1)
    source = source + (torch.arange(N) // 2 * 2)[:, None]  # mixing groups of 2 consecutive images
    return {"image": normed(N, E), "text": normed(N, E), "tokens": normed(N, L, E), "prompts": normed(U, E),
            "targets": (torch.rand(N, U, generator=g) < 0.4).float(), "source": source,
            "raw": torch.randn(N, E, generator=g),
            "maps": 3 + torch.randn(N, 3, 2, 2, generator=g)}


def _losses(x: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    """Every loss of the rows `rows` of the batch (the whole batch in one process, a rank's half in two)."""
    leaves = {k: x[k][rows].clone().requires_grad_() for k in ("image", "text", "tokens", "raw", "maps")}
    prompts = x["prompts"].clone().requires_grad_()
    scale = torch.tensor(10.0)
    source = x["source"][rows] - x["source"][rows].min()  # indices within this rank's batch
    normed = batch_norm(leaves["raw"], None, None, True, 0.1, 1e-5, across_ranks=True)
    running = torch.zeros(3), torch.ones(3)
    maps = batch_norm(leaves["maps"], *running, True, 0.1, 1e-5, across_ranks=True)  # a conv layer's BatchNorm
    losses = {"contrastive": contrastive_loss(leaves["image"], leaves["text"], scale),
              "segmentation": mixed_segmentation_loss(leaves["tokens"], leaves["text"], source, scale),
              "keywords": multilabel_contrastive_loss(leaves["tokens"], prompts, x["targets"][rows], scale),
              "norm": (normed * torch.linspace(-1, 1, E)).pow(3).mean(),
              "norm2d": (maps * torch.linspace(-1, 1, 4).view(2, 2)).pow(3).mean()}
    total = sum(losses.values())
    total.backward()
    grads = {k: v.grad for k, v in leaves.items()} | {"prompts": prompts.grad}
    return ({k: v.detach() for k, v in losses.items()} | {f"grad_{k}": v for k, v in grads.items()}
            | {"running_mean": running[0], "running_var": running[1]})


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        half = N // WORLD
        torch.save(_losses(_inputs(), slice(rank * half, (rank + 1) * half)), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_compute_the_loss_and_gradients_of_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    one = _losses(_inputs(), slice(None))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in ("contrastive", "segmentation", "keywords", "norm", "norm2d", "running_mean", "running_var"):
        mean = sum(r[name] for r in ranks) / WORLD  # what DDP optimises (the running statistics: alike on every rank)
        torch.testing.assert_close(mean, one[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in ("image", "text", "tokens", "raw", "maps"):
        # each rank's gradient, divided by the world size as DDP's averaging does, is the global batch's
        gathered = torch.cat([r[f"grad_{name}"] for r in ranks]) / WORLD
        torch.testing.assert_close(gathered, one[f"grad_{name}"], rtol=1e-4, atol=1e-6, msg=name)
    prompts = sum(r["grad_prompts"] for r in ranks) / WORLD  # a replicated input: DDP averages its gradients
    torch.testing.assert_close(prompts, one["grad_prompts"], rtol=1e-4, atol=1e-6)
