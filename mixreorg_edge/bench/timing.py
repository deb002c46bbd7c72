"""Latency and cost measurements of a model on this host."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# torch's FlopCounterMode has no formula for the CPU kernel of scaled_dot_product_attention, so on CPU it would
# silently count attention as free (the deployed MobileViT-XXS student at 448x448: 2.34 instead of 3.81 GFLOPs).
_CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def measure_latencies(
    fns: Mapping[str, Callable[[], object]], warmup: int = 5, runs: int = 20
) -> dict[str, dict[str, float]]:
    """Time several callables interleaved: after `warmup` untimed calls of each, `runs` rounds each call every
    callable once in turn, so a slow phase of a shared host falls on all of them alike and their ratios stay
    comparable. Per name: milliseconds (median, p90, min, mean), runs, warmup, threads."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: {**summarize_times(values), "warmup": warmup} for name, values in times.items()}


def summarize_times(times: list[float]) -> dict[str, float]:
    """Milliseconds of repeated calls: median, p90 (nearest rank), min, mean, standard deviation, runs, and the torch
    threads of this process."""
    times = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
        "min_ms": round(times[0], 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "std_ms": round(statistics.pstdev(times), 3),
        "runs": len(times),
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def count_gflops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """Forward FLOPs (multiply and add counted separately, as torch's FlopCounterMode does) in GFLOPs, attention
    included on every device."""
    counter = FlopCounterMode(display=False, custom_mapping={_CPU_ATTENTION: _cpu_attention_flops})
    with counter:
        model(example)
    return counter.get_total_flops() / 1e9


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
