"""Cost measurements: FLOP counting includes attention, latency statistics are well formed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from mixreorg_edge.bench.host import cpu_generation, cpu_model, host_info
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


def test_cpu_generation_tells_apart_processors_with_one_marketing_name(tmp_path) -> None:
    def generation(family: int, model: int) -> str:
        cpuinfo = tmp_path / f"cpuinfo_{family}_{model}"
        first = f"processor\t: 0\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
        second = "\nprocessor\t: 1\ncpu family\t: 1\nmodel\t\t: 1\nmodel name\t: other\n"
        cpuinfo.write_text(first + second)
        assert cpu_model(cpuinfo) == "AMD EPYC"
        return cpu_generation(cpuinfo)

    assert generation(26, 2) == "family 26 model 2"  # the first processor's, not the last one's
    assert generation(25, 17) != generation(26, 2)
    assert cpu_generation(tmp_path / "absent") == ""


def test_host_info_records_the_threads_in_use() -> None:
    info = host_info()
    assert info["threads"] == torch.get_num_threads() and info["cpu"] and info["logical_cpus"] >= 1
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_timing_graphs_of_a_teacher_and_a_student_are_timed_together() -> None:
    from conftest import tiny_teacher_config
    from mixreorg_edge.bench.graphs import speedups, time_interleaved, timing_graphs
    from mixreorg_edge.distill.student import DenseStudent, StudentConfig
    from mixreorg_edge.teacher.model import MixReorgTeacher

    size = 64
    teacher = MixReorgTeacher(tiny_teacher_config()).eval()
    student = DenseStudent(StudentConfig("mobilevit:xxs", embed_dim=teacher.embed_dim, image_size=size)).eval()
    costs, graphs = {}, {}
    for name, model in (("teacher", teacher), ("student", student)):
        costs[name], graphs[name] = timing_graphs(model, size)
    assert set(graphs["teacher"]) == {"deployed", "network"}  # a teacher has no separate timm backbone
    assert set(graphs["student"]) == {"deployed", "network", "backbone"}
    assert costs["student"]["gflops_64"] > 0 and costs["student"]["params_m"] > 0
    latencies = time_interleaved(graphs, size, runs=2)
    student_row = latencies["student"]
    assert student_row["latency_runs"] == 2 and "backbone_latency_64_ms" not in latencies["teacher"]
    assert student_row["latency_64_min_ms"] <= student_row["latency_64_ms"]
    ratios = speedups(latencies["teacher"], student_row, size)
    assert ratios["speedup"] == round(latencies["teacher"]["latency_64_ms"] / student_row["latency_64_ms"], 2)
    assert ratios["speedup_backbone_bound"] == round(
        latencies["teacher"]["network_latency_64_ms"] / student_row["backbone_latency_64_ms"], 2)


def test_report_prints_every_row_and_writes_meta_and_rows(tmp_path) -> None:
    import json

    from rich.console import Console

    from mixreorg_edge.bench.report import print_rows, write_results

    rows = [{"model": "teacher", "latency_ms": 200.5}, {"model": "student", "latency_ms": 40.1, "speedup": 5.0}]
    console = Console(record=True, width=120)
    print_rows("latency", rows, ("model", "latency_ms", "speedup"), console)
    text = console.export_text()
    assert "teacher" in text and "200.5" in text and "5.0" in text
    assert text.splitlines()[-2].split("│")[3].strip() == "5.0"
    teacher_line = next(line for line in text.splitlines() if "teacher" in line)
    assert teacher_line.split("│")[3].strip() == "-"  # a key the row lacks
    out = tmp_path / "nested" / "result.json"
    write_results(out, {"threads": 2}, rows)
    assert json.loads(out.read_text()) == {"meta": {"threads": 2}, "rows": rows}
