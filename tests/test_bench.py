"""Cost measurements: FLOP counting includes attention, latency statistics are well formed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from mixreorg_edge.bench.host import cpu_model, host_info
from mixreorg_edge.bench.timing import count_gflops, measure_latencies


class Attention(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


def test_attention_flops_are_counted() -> None:
    batch, heads, length, dim = 2, 4, 100, 16
    x = torch.randn(batch, heads, length, dim)
    expected = 2 * batch * heads * length * length * dim * 2  # q @ k^T and attn @ v, multiply and add each
    assert count_gflops(Attention(), x) * 1e9 == pytest.approx(expected)


def test_transformer_block_flops_include_attention() -> None:
    width, tokens = 64, 50
    x = torch.randn(1, tokens, width)
    linear = 2 * tokens * (3 * width * width + width * width + 2 * width * 4 * width)  # qkv, proj, MLP
    attention = 2 * 2 * tokens * tokens * width
    assert count_gflops(Block(width, num_heads=4).eval(), x) * 1e9 == pytest.approx(linear + attention)


def test_latency_statistics() -> None:
    stats = measure_latencies({"sum": lambda: sum(range(1000))}, warmup=1, runs=5)["sum"]
    assert stats["runs"] == 5 and stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    with pytest.raises(ValueError):
        measure_latencies({"none": lambda: None}, runs=0)


def test_latencies_are_measured_interleaved() -> None:
    calls: list[str] = []
    stats = measure_latencies({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=2, runs=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up per callable, then round-robin
    assert set(stats) == {"a", "b"} and all(row["runs"] == 3 and row["warmup"] == 2 for row in stats.values())


def test_cpu_model_is_read_from_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_model(tmp_path / "absent")  # elsewhere: what `platform` knows, never empty


def test_host_info_records_the_threads_in_use() -> None:
    info = host_info()
    assert info["threads"] == torch.get_num_threads() and info["cpu"] and info["logical_cpus"] >= 1
