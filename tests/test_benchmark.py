"""`benchmark`: the timing method measures a known cost, each runtime's memory is its own process's, a failing
export or a failing runtime is a row and never the end of the run, artifacts are reused while up to date,
`--min-miou` gates, `--import` reads timings measured elsewhere, and bad input is one clear line."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from mixreorg_edge.bench.suite import (CANNOT_RUN, EXPORT_FAILED, PASSED, RUN_FAILED, BenchmarkRequest, Entry,
                                       run_benchmark, start_workers, time_round_robin)
from mixreorg_edge.bench.summary import highlights
from mixreorg_edge.cli import app
from mixreorg_edge.distill.train import DistillConfig, distill
from mixreorg_edge.export import onnx as onnx_target
from mixreorg_edge.training import TrainConfig

runner = CliRunner()
QUIET = Console(quiet=True)
KNOWN_COSTS = textwrap.dedent('''
    import time

    import numpy as np


    def sleeper(ms):
        """A runner that costs `ms` milliseconds a call."""
        return lambda x: (time.sleep(ms / 1000.0), x)[1]


    def allocating(megabytes):
        """A runner that holds `megabytes` of touched memory."""
        block = np.ones(megabytes * 1024 * 1024 // 8)
        return lambda x: x + block[0]


    def broken():
        raise RuntimeError("this runtime cannot load the model")
''')


@pytest.fixture
def known_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of runners of known cost, importable by benchmark children; returns a scratch folder with an
    example input."""
    (tmp_path / "known_costs.py").write_text(KNOWN_COSTS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    np.save(tmp_path / "example.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))
    return tmp_path


def _entries(*factories: tuple[str, dict]) -> list[Entry]:
    return [Entry({"status": PASSED, "reason": None, "latency_ms_median": None},
                  {"factory": f"known_costs:{name}", "kwargs": kwargs}) for name, kwargs in factories]


def _run(entries: list[Entry], scratch: Path, runs: int = 10) -> None:
    start_workers(entries, scratch / "example.npy", scratch, "test", QUIET)
    try:
        time_round_robin([e for e in entries if e.worker is not None], warmup=2, runs=runs, threads=1, label="test",
                         console=QUIET)
    finally:
        for entry in entries:
            if entry.worker is not None:
                entry.worker.close()


def test_round_robin_timing_measures_known_costs(known_costs: Path) -> None:
    entries = _entries(("sleeper", {"ms": 10}), ("sleeper", {"ms": 40}))
    _run(entries, known_costs)
    fast, slow = (entry.row for entry in entries)
    assert 9.5 <= fast["latency_ms_median"] <= 20, fast
    assert 39.5 <= slow["latency_ms_median"] <= 60, slow
    assert fast["latency_ms_p90"] >= fast["latency_ms_median"] and fast["runs"] == 10 and fast["threads"] == 1
    assert 2.5 <= slow["latency_ms_median"] / fast["latency_ms_median"] <= 4.2
    assert fast["fps"] == pytest.approx(1000 / fast["latency_ms_median"], rel=0.01)


def test_each_row_has_its_own_process_memory(known_costs: Path) -> None:
    entries = _entries(("sleeper", {"ms": 1}), ("allocating", {"megabytes": 300}))
    _run(entries, known_costs, runs=2)
    small, large = (entry.row["peak_rss_mb"] for entry in entries)
    assert large - small >= 280, (small, large)
    assert small < 200  # a child holds its runner and numpy, not the parent's memory


def test_a_runtime_that_fails_to_load_is_a_row(known_costs: Path) -> None:
    entries = _entries(("broken", {}), ("sleeper", {"ms": 1}))
    _run(entries, known_costs, runs=2)
    assert entries[0].row["status"] == RUN_FAILED and "cannot load the model" in entries[0].row["reason"]
    assert entries[1].row["status"] == PASSED and entries[1].row["latency_ms_median"] is not None


def test_runtime_side_of_onnx_and_openvino_imports_without_torch() -> None:
    code = ("import sys; import mixreorg_edge.bench.worker, mixreorg_edge.export.onnx, mixreorg_edge.export.openvino;"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.fixture(scope="module")
def student(tiny_world: Path, tiny_teacher_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench_student") / "run"
    cfg = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=2, steps=20, save_every=1000, log_every=10, seed=0)
    distill(tiny_teacher_run, "mobilenetv4", tiny_world, out, cfg, DistillConfig(images=64),
            cache_dir=out.parent / "cache", show_progress=False)
    return out


def _request(student: Path, world: Path, artifacts: Path, **options) -> BenchmarkRequest:
    options = {"targets": ["onnx", "coreml", "tensorrt"], "precisions": ["fp32"], "runs": 3, "warmup": 1,
               "parity_images": 4, "label_set": "context", **options}
    return BenchmarkRequest(models=[student], data=world / "val", calib=world / "train", calib_images=8,
                            artifacts=artifacts, **options)


def test_benchmark_rows_and_reuse(student: Path, tiny_world: Path, tmp_path: Path) -> None:
    with (tmp_path / "log.txt").open("w") as log:
        _benchmark_rows_and_reuse(student, tiny_world, tmp_path, Console(file=log, width=200))


def _benchmark_rows_and_reuse(student: Path, tiny_world: Path, tmp_path: Path, console: Console) -> None:
    report = run_benchmark(_request(student, tiny_world, tmp_path / "art"), console)
    rows = {(row["model"], row["target"], row["precision"]): row for row in report["rows"]}
    assert list(rows)[:2] == [("teacher", "pytorch", "fp32"), ("student", "pytorch", "fp32")]
    onnx = rows[("student", "onnx", "fp32")]
    assert onnx["status"] == PASSED and onnx["latency_ms_median"] > 0 and onnx["peak_rss_mb"] > 0
    assert onnx["miou"] is not None and onnx["pixel_agreement"] >= 0.99 and onnx["size_mb"] > 0
    assert onnx["student"] == "mobilenetv4:conv_small" and onnx["imgsz"] == 32
    assert rows[("student", "coreml", "fp32")]["status"] == (CANNOT_RUN if sys.platform != "darwin" else PASSED)
    assert {"host", "cpu", "os", "versions"} <= report["meta"].keys()
    # a second run reuses the export; new weights export again
    request = _request(student, tiny_world, tmp_path / "art", targets=["onnx"])
    run_benchmark(request, console)
    console.file.flush()
    assert "onnx fp32 32px: reusing" in (tmp_path / "log.txt").read_text()
    changed = tmp_path / "changed"
    shutil.copytree(student, changed)
    weights = changed / "model.safetensors"
    with safe_open(weights, "pt") as f:
        metadata, tensors = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, weights, metadata=metadata)
    request.models, request.artifacts = [changed], tmp_path / "art"
    (tmp_path / "art" / "changed").mkdir()
    shutil.copytree(tmp_path / "art" / "run" / "onnx-fp32-32px", tmp_path / "art" / "changed" / "onnx-fp32-32px")
    run_benchmark(request, console)
    console.file.flush()
    assert "onnx-fp32-32px is out of date; exporting again" in (tmp_path / "log.txt").read_text()


def test_a_failing_export_is_a_row(student: Path, tiny_world: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_convert(job, path):
        raise RuntimeError("the converter met an operator it does not know")

    monkeypatch.setattr(onnx_target.TARGET, "convert", broken_convert)
    report = run_benchmark(_request(student, tiny_world, tmp_path / "art", targets=["onnx", "openvino"],
                                    precisions=["fp32"]), QUIET)
    rows = {row["target"]: row for row in report["rows"]}
    assert rows["onnx"]["status"] == EXPORT_FAILED and "does not know" in rows["onnx"]["reason"]
    assert not (tmp_path / "art" / "run" / "onnx-fp32-32px").exists()


def test_cli_min_miou_gate_and_reports(student: Path, tiny_world: Path, tmp_path: Path) -> None:
    common = ["benchmark", "--model", str(student), "--data", str(tiny_world / "val"), "--targets", "onnx",
              "--precisions", "fp32", "--runs", "2", "--warmup", "1", "--label-set", "context", "--parity-images",
              "4", "--artifacts", str(tmp_path / "art")]
    failing = runner.invoke(app, [*common, "--min-miou", "101"])
    assert failing.exit_code == 1, failing.output
    passing = runner.invoke(app, [*common, "--min-miou", "0", "--json", str(tmp_path / "r.json"), "--markdown",
                                  str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png")])
    assert passing.exit_code == 0, passing.output
    report = json.loads((tmp_path / "r.json").read_text())
    keys = {"model", "student", "target", "precision", "imgsz", "status", "latency_ms_median", "latency_ms_p90",
            "peak_rss_mb", "size_mb", "miou"}
    assert all(keys <= row.keys() for row in report["rows"])
    assert "| student mobilenetv4:conv_small | onnx | fp32 | 32 | passed |" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    # timings measured elsewhere, brought into the same report
    artifact = next(row["artifact"] for row in report["rows"] if row["target"] == "onnx")
    (tmp_path / "phone.json").write_text(json.dumps({"host": {"device": "a phone"}, "rows": [
        {"artifact": artifact, "latencies_ms": [12.0, 10.0, 11.0], "threads": 4}]}))
    imported = runner.invoke(app, ["benchmark", "--import", str(tmp_path / "phone.json"), "--json",
                                   str(tmp_path / "phone_report.json")])
    assert imported.exit_code == 0, imported.output
    row = json.loads((tmp_path / "phone_report.json").read_text())["rows"][0]
    assert row["latency_ms_median"] == 11.0 and row["target"] == "onnx" and row["threads"] == 4


@pytest.mark.parametrize("arguments, message", [
    (["--targets", "tflite"], "unknown target 'tflite'"),
    (["--precisions", "int4"], "unknown precision 'int4'"),
    (["--imgsz", "50"], "multiple of 32"),
    (["--runs", "0"], "--runs must be at least 1"),
])
def test_cli_bad_options(student: Path, tiny_world: Path, arguments: list[str], message: str) -> None:
    result = runner.invoke(app, ["benchmark", "--model", str(student), "--data", str(tiny_world / "val"), *arguments])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_cli_bad_import_and_missing_model(tmp_path: Path) -> None:
    def error(arguments: list[str]) -> str:
        result = runner.invoke(app, ["benchmark", *arguments])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    (tmp_path / "bad.json").write_text("{not json")
    assert "is not JSON" in error(["--import", str(tmp_path / "bad.json")])
    (tmp_path / "empty.json").write_text(json.dumps({"rows": [{"artifact": str(tmp_path), "latencies_ms": []}]}))
    assert "latencies_ms" in error(["--import", str(tmp_path / "empty.json")])
    assert "--model" in error(["--data", str(tmp_path)])


def test_highlights_name_the_fastest_format_and_its_ratios() -> None:
    def row(model, target, precision, ms, miou=None, student="s:1"):
        return {"model": model, "student": student if model == "student" else None, "target": target,
                "precision": precision, "imgsz": 448, "status": PASSED, "latency_ms_median": ms, "miou": miou}

    rows = [row("teacher-vit-s", "pytorch", "fp32", 300.0), row("student", "pytorch", "fp32", 40.0),
            row("student", "onnx", "fp32", 20.0, 70.0), row("student", "onnx", "int8", 10.0, 69.5),
            row("student", "openvino", "int8", 15.0, 69.0)]
    assert highlights(rows) == ["student s:1 at 448 px: fastest onnx int8, 10.00 ms, 30.0x teacher-vit-s eager, "
                                "2.00x its fp32; int8 mIoU against fp32: onnx -0.50"]
