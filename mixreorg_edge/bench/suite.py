"""`mixreorg-edge benchmark`: every exported format of one or more runs on this host, one row per (model, target,
precision, input size), each measured in a child process of its own (see worker.py).

Rows, in order: the PyTorch eager references (the paper-size `teacher-vit-s` at sizes of 224 px and more, the run's
toy teacher, the run itself in fp32), then each target at each precision it takes. Exports live in the artifacts
folder and are reused while their key (weights digest, target, precision, size, output, label set, calibration,
parity data) is unchanged. At each input size all runnable rows are timed round-robin in one loop, one call of each
per round, so a slow phase of the host falls on all of them alike; at the model's evaluation size every row also
labels the whole validation split through its own runtime, for mIoU and agreement with the eager fp32 run."""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ..checkpoint import load_model_config
from ..data.standard_layouts import open_segmentation_dataset
from ..export.artifact import ExportRequest, export_artifact, read_metadata
from ..export.graph import check_image_size, default_image_size, weights_digest
from ..export.images import labelled_inputs
from ..export.parity import ParityError
from ..export.target import OUTPUT_KINDS, PRECISIONS, TARGET_NAMES, get_target
from ..metrics import SegmentationMetric
from ..progress import PhaseProgress
from ..runs import model_file
from .host import host_info
from .references import PAPER_TEACHER
from .timing import summarize_times
from .worker import Worker, WorkerError

PYTORCH = "pytorch"  # the target name of eager rows
PASSED, PARITY_FAILED, EXPORT_FAILED, CANNOT_RUN, RUN_FAILED = (
    "passed", "parity failed", "export failed", "cannot run on this host", "run failed")
PAPER_TEACHER_MIN_SIZE = 224  # the vit-s teacher's patch-16 stem: smaller inputs are not photos it is sized for
KEY_FILE = "benchmark_key.json"
RUNTIME_PACKAGES = ("torch", "executorch", "onnxruntime", "openvino", "coremltools", "nncf", "torch-tensorrt")


@dataclass
class BenchmarkRequest:
    """What `benchmark` was asked for; `validate` checks it before any work."""

    models: list[Path]
    data: Path
    targets: list[str] = field(default_factory=lambda: list(TARGET_NAMES))
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    sizes: list[int] | None = None  # None: each model's evaluation size
    threads: int | None = None  # None: torch's default, given to every runtime
    warmup: int = 5
    runs: int = 30
    calib: Path | None = None
    calib_images: int = 128
    artifacts: Path | None = None
    parity_images: int | None = 100
    output: str = "labels"
    label_set: str = "objects"
    teacher_rows: bool = True  # the run's teacher in PyTorch eager, as a reference row

    def validate(self) -> None:
        if not self.models:
            raise ValueError("give at least one --model RUN")
        for run in self.models:
            load_model_config(model_file(run))  # a clear error for a folder that is not a run
        for name in self.targets:
            if name not in TARGET_NAMES:
                raise ValueError(f"unknown target {name!r}; choose all or some of: {', '.join(TARGET_NAMES)}")
        for precision in self.precisions:
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r}; choose some of: {', '.join(PRECISIONS)}")
        if self.output not in OUTPUT_KINDS[:2]:
            raise ValueError(f"--output must be labels or scores, got {self.output!r}")
        for size in self.sizes or []:
            check_image_size(size)
        if self.runs < 1 or self.warmup < 0:
            raise ValueError(f"--runs must be at least 1 and --warmup at least 0, got {self.runs} and {self.warmup}")
        if self.calib_images < 1 or (self.parity_images is not None and self.parity_images < 1):
            raise ValueError("--calib-images and --parity-images must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.calib is not None and not self.calib.exists():
            raise FileNotFoundError(f"--calib {self.calib} does not exist")
        open_segmentation_dataset(self.data, self.label_set)  # a labelled split, or one clear error


@dataclass
class Entry:
    """One row being measured: what runs it, in which child, and the results so far."""

    row: dict[str, Any]
    spec: dict[str, Any] | None = None  # the worker spec; None: nothing to run
    worker: Worker | None = None
    times: list[float] = field(default_factory=list)


def parse_list(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """`all` or a comma-separated list of `allowed` names."""
    if value.strip() == "all":
        return list(allowed)
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{option} is empty; give all or a comma-separated list of: {', '.join(allowed)}")
    return names


def benchmark_host() -> dict[str, Any]:
    """host_info() with the operating system and the version of every runtime installed."""
    import importlib.metadata

    versions = {}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {**host_info(), "os": platform.platform(), "python": platform.python_version(), "versions": versions}


def _student_name(config: dict[str, Any]) -> str | None:
    return config["student"]["student"] if config["kind"] == "student" else None


def _artifact_folder(request: BenchmarkRequest, run: Path, target: str, precision: str, size: int) -> Path:
    base = request.artifacts / run.name if request.artifacts else run / "artifacts"
    return base / f"{target}-{precision}-{size}px"


def _calibration_folder(request: BenchmarkRequest, config: dict[str, Any]) -> Path | None:
    """--calib, else the training images the run was trained on (where they still exist)."""
    if request.calib is not None:
        return request.calib
    trained_on = config.get("data")
    return Path(trained_on) if trained_on and Path(trained_on).exists() else None


def _export_key(request: BenchmarkRequest, run: Path, target: str, precision: str, size: int,
                calib: Path | None) -> dict[str, Any]:
    return {"run": str(run.resolve()), "weights_sha256": weights_digest(run), "target": target, "precision": precision,
            "upsampling": get_target(target).upsampling,
            "runtime_config": get_target(target).runtime_config(precision), "imgsz": size, "output": request.output,
            "label_set": request.label_set,
            "data": str(request.data.resolve()), "parity_images": request.parity_images,
            "calib": str(calib.resolve()) if precision == "int8" and calib else None,
            "calib_images": request.calib_images if precision == "int8" else None}


def ensure_artifact(request: BenchmarkRequest, run: Path, config: dict[str, Any], target: str, precision: str,
                    size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The artifact of (run, target, precision, size): reused when its key is unchanged, exported otherwise. Returns
    the row fields it settles: `status` (and `reason`), `artifact`, `size_mb`, and the metadata as `_metadata`."""
    folder = _artifact_folder(request, run, target, precision, size)
    reason = get_target(target).missing()
    if reason:
        return {"status": CANNOT_RUN, "reason": reason, "artifact": None}
    calib = _calibration_folder(request, config)
    if precision == "int8" and calib is None:
        return {"status": EXPORT_FAILED, "artifact": None,
                "reason": "int8 needs calibration images: give --calib DIR (the run's training data is gone)"}
    key = _export_key(request, run, target, precision, size, calib)
    key_file = folder / KEY_FILE
    if key_file.is_file() and json.loads(key_file.read_text()) == key:
        log(f"{target} {precision} {size}px: reusing {folder}")
    else:
        if folder.exists():
            log(f"{target} {precision} {size}px: {folder} is out of date; exporting again")
            shutil.rmtree(folder)
        else:
            log(f"{target} {precision} {size}px: exporting to {folder}")
        export = ExportRequest(run=run, target=target, out=folder, precision=precision, output=request.output,
                               imgsz=size, calib=calib if precision == "int8" else None,
                               num_samples=request.calib_images, data=request.data, label_set=request.label_set,
                               parity_images=request.parity_images)
        try:
            export_artifact(export, log=lambda _: None)
        except ParityError:
            pass  # the artifact is kept, marked `parity failed` in its metadata
        except Exception as error:  # noqa: BLE001 - a failed export is this row's status, never the run's end
            return {"status": EXPORT_FAILED, "reason": f"{type(error).__name__}: {error}", "artifact": None}
        key_file.write_text(json.dumps(key, indent=2) + "\n")
    metadata = read_metadata(folder)
    fields = {"artifact": str(folder), "size_mb": round(artifact_bytes(folder) / 1e6, 3), "_metadata": metadata,
              "status": PARITY_FAILED if metadata["status"] == "parity failed" else PASSED,
              "reason": metadata.get("failure")}
    cannot = get_target(target).cannot_run(precision)
    if cannot:
        fields.update(status=CANNOT_RUN, reason=cannot)
    return fields


def artifact_bytes(folder: Path) -> int:
    """Bytes of an artifact's model (everything but its metadata and the benchmark's key)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name not in ("metadata.json", KEY_FILE))


def _row(model: str, student: str | None, run: Path | None, target: str, precision: str, size: int,
         eval_size: bool) -> dict[str, Any]:
    return {"model": model, "student": student, "run": str(run) if run else None, "target": target,
            "precision": precision, "imgsz": size, "eval_size": eval_size, "status": PASSED, "reason": None,
            "artifact": None, "size_mb": None, "load_ms": None, "peak_rss_mb": None, "latency_ms_median": None,
            "latency_ms_p90": None, "latency_ms_std": None, "fps": None, "threads": None, "miou": None,
            "pixel_agreement": None, "cosine": None}


def plan(request: BenchmarkRequest, log: Callable[[str], None]) -> list[Entry]:
    """Every row of the benchmark, exports done (or reused), in report order."""
    dataset = open_segmentation_dataset(request.data, request.label_set)
    labels = {"classes": list(dataset.classes), "background_words": list(dataset.background_words),
              "background_threshold": dataset.background_threshold}
    entries: list[Entry] = []
    seen_references: set[tuple[str, int]] = set()

    def eager(model: str, run: Path | None, student: str | None, size: int, eval_size: bool) -> None:
        if (str(run), size) in seen_references:
            return
        seen_references.add((str(run), size))
        row = _row(model, student, run, PYTORCH, "fp32", size, eval_size and run is not None)
        spec = {"factory": "mixreorg_edge.bench.references:eager_runner",
                "kwargs": {"run": str(run) if run else None, "imgsz": size, "output": request.output,
                           "threads": request.threads, **labels}}
        entries.append(Entry(row, spec))

    for run in request.models:
        config = load_model_config(model_file(run))
        evaluation_size = default_image_size(config)
        student = _student_name(config)
        kind = "student" if student else "teacher"
        for size in request.sizes or [evaluation_size]:
            eval_size = size == evaluation_size
            if size >= PAPER_TEACHER_MIN_SIZE:
                eager(PAPER_TEACHER, None, None, size, eval_size)
            teacher_run = config.get("teacher_run")
            if request.teacher_rows and student and teacher_run and (Path(teacher_run) / "config.json").is_file():
                eager("teacher", Path(teacher_run), None, size, eval_size)
            eager(kind, run, student, size, eval_size)
            for target in request.targets:
                for precision in request.precisions:
                    if precision not in get_target(target).precisions:
                        continue  # a precision this target does not take is not a row (see `targets`)
                    row = _row(kind, student, run, target, precision, size, eval_size)
                    row.update(ensure_artifact(request, run, config, target, precision, size, log))
                    metadata = row.pop("_metadata", None)
                    spec = None
                    if row["status"] in (PASSED, PARITY_FAILED):
                        spec = {"factory": "mixreorg_edge.bench.worker:artifact_runner",
                                "kwargs": {"target": target, "model_file": str(Path(row["artifact"]) /
                                                                               metadata["model_file"]),
                                           "threads": request.threads}}
                    entries.append(Entry(row, spec))
    # by input size, the shared references (the paper-size teacher, then toy teachers) first at each size
    rank = {PAPER_TEACHER: 0, "teacher": 1}
    return sorted(entries, key=lambda entry: (entry.row["imgsz"], rank.get(entry.row["model"], 2)
                                              if entry.row["target"] == PYTORCH else 2))


def measure(entries: list[Entry], request: BenchmarkRequest, console: Console) -> None:
    """Load, time (interleaved per input size), measure memory and, at the evaluation size, label the validation
    split: results written into each entry's row."""
    dataset = open_segmentation_dataset(request.data, request.label_set)
    with tempfile.TemporaryDirectory(prefix="mixreorg-benchmark-") as scratch_dir:
        scratch = Path(scratch_dir)
        for size in sorted({entry.row["imgsz"] for entry in entries}):
            group = [entry for entry in entries if entry.row["imgsz"] == size and entry.spec is not None]
            evaluated = any(entry.row["eval_size"] for entry in group)
            pairs = labelled_inputs(dataset, (size, size), None if evaluated else 1)
            example, inputs = scratch / f"example-{size}.npy", scratch / f"inputs-{size}.npy"
            np.save(example, pairs[0][0].numpy())
            if evaluated:
                np.save(inputs, np.concatenate([x.numpy() for x, _ in pairs]))
            try:
                start_workers(group, example, scratch, f"{size}px", console)
                running = [entry for entry in group if entry.worker is not None]
                time_round_robin(running, request.warmup, request.runs, request.threads, f"{size}px", console)
                if evaluated:
                    masks = [mask for _, mask in pairs]
                    _evaluate(running, inputs, masks, scratch, len(dataset.classes), request.output, console)
            finally:
                for entry in group:
                    if entry.worker is not None:
                        entry.worker.close()
                        entry.worker = None


def start_workers(group: list[Entry], example: Path, scratch: Path, label: str, console: Console) -> None:
    """A child process per entry, its runner loaded and called once on `example` (an .npy input); an entry whose
    child fails becomes a `run failed` row."""
    description = f"loading {len(group)} models at {label} (a process each)"
    with PhaseProgress(description, len(group), console=console) as progress:
        for index, entry in enumerate(group):
            try:
                entry.worker = Worker({**entry.spec, "example": str(example)}, scratch / f"worker-{label}-{index}.log")
            except WorkerError as error:
                entry.row.update(status=RUN_FAILED, reason=str(error))
            else:
                entry.row["load_ms"] = entry.worker.loaded["load_ms"]
            progress.advance()


def _fail(entry: Entry, error: WorkerError) -> None:
    entry.row.update(status=RUN_FAILED, reason=str(error))
    entry.worker = None


def time_round_robin(running: list[Entry], warmup: int, runs: int, threads: int | None, label: str,
                     console: Console) -> None:
    """`warmup` untimed calls per entry, then `runs` rounds that call every entry's child once in turn (each call
    timed inside its child); per entry the latency statistics, FPS, the child's peak memory and `threads` (what its
    runtime was given) go into its row."""
    for entry in running:
        try:
            entry.worker.call("warmup", n=warmup)
        except WorkerError as error:
            _fail(entry, error)
    description = f"timing at {label}: {runs} rounds of {len(running)} formats"
    with PhaseProgress(description, runs, console=console) as progress:
        for _ in range(runs):
            for entry in running:
                if entry.worker is None:
                    continue
                try:
                    entry.times.append(entry.worker.call("time")["ms"])
                except WorkerError as error:
                    _fail(entry, error)
            progress.advance()
    for entry in running:
        if entry.worker is None:
            continue
        try:
            entry.row["peak_rss_mb"] = entry.worker.call("memory")["peak_rss_mb"]
        except WorkerError as error:
            _fail(entry, error)
            continue
        stats = summarize_times(entry.times)
        entry.row.update(latency_ms_median=stats["median_ms"], latency_ms_p90=stats["p90_ms"],
                         latency_ms_std=stats["std_ms"], fps=round(1000.0 / stats["median_ms"], 1),
                         runs=len(entry.times), warmup=warmup, threads=threads)


def _evaluate(running: list[Entry], inputs: Path, masks: list[np.ndarray], scratch: Path, num_classes: int,
              output: str, console: Console) -> None:
    """mIoU of every evaluated row through its own runtime, and agreement with its run's eager fp32 row."""
    outputs: dict[int, np.ndarray] = {}
    description = f"labelling {len(masks)} validation images through each runtime"
    with PhaseProgress(description, len(running), console=console) as progress:
        for index, entry in enumerate(running):
            if entry.worker is not None and entry.row["eval_size"]:
                out = scratch / f"outputs-{index}.npy"
                try:
                    entry.worker.call("predict", inputs=str(inputs), out=str(out))
                    outputs[index] = np.load(out)
                except WorkerError as error:
                    _fail(entry, error)
            progress.advance()
    references = {entry.row["run"]: outputs.get(index) for index, entry in enumerate(running)
                  if entry.row["target"] == PYTORCH}
    for index, result in outputs.items():
        row = running[index].row
        labels = _labels(result, output)
        metric = SegmentationMetric(num_classes)
        for predicted, mask in zip(labels, masks):
            metric.update(torch.from_numpy(predicted), torch.from_numpy(mask))
        row["miou"] = round(metric.compute()["miou"], 2)
        reference = references.get(row["run"])
        if reference is not None and row["target"] != PYTORCH:
            row["pixel_agreement"] = round(float((labels == _labels(reference, output)).mean()), 6)
            if output != "labels":
                row["cosine"] = _cosine(result, reference)


def _labels(outputs: np.ndarray, output: str) -> np.ndarray:
    """(N, H, W) label maps from N stacked outputs of `output` kind ((N, 1, H, W) labels or (N, 1, C, H, W) scores)."""
    return outputs[:, 0].astype(np.int64) if output == "labels" else outputs[:, 0].argmax(axis=1)


def _cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    a, b = outputs.astype(np.float64), reference.astype(np.float64)
    numerator = (a * b).sum(axis=2)
    denominator = np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=2)
    return round(float((numerator / np.maximum(denominator, 1e-12)).mean()), 6)


def run_benchmark(request: BenchmarkRequest, console: Console) -> dict[str, Any]:
    """The whole benchmark: `{"meta": host and settings, "rows": [...]}`."""
    request.validate()
    request.threads = request.threads or torch.get_num_threads()  # every runtime gets the same, recorded number
    entries = plan(request, lambda line: console.print(line))
    measure(entries, request, console)
    settings = {"models": [str(run) for run in request.models], "data": str(request.data),
                "label_set": request.label_set, "output": request.output, "warmup": request.warmup,
                "runs": request.runs, "threads": request.threads,
                "timing": "each row in its own process; per input size, after the warm-up, `runs` rounds that call "
                          "every row once (timed inside its process), so all rows share the host's slow phases",
                "memory": "peak resident set of the row's process after loading, warm-up and timing"}
    return {"meta": {**benchmark_host(), **settings}, "rows": [entry.row for entry in entries]}


def below_min_miou(rows: list[dict[str, Any]], threshold: float) -> list[str]:
    """The passed rows whose mIoU is below `threshold` (a user's CI gate), one description each."""
    return [f"{row['model']} {row.get('student') or ''} {row['target']} {row['precision']} {row['imgsz']}px: "
            f"mIoU {row['miou']:.2f}" for row in rows
            if row["status"] == PASSED and row.get("miou") is not None and row["miou"] < threshold]


def imported_report(path: Path) -> dict[str, Any]:
    """Timings measured elsewhere (a phone running ExecuTorch's own runner, say) as a report of the same format:
    `path` is JSON `{"host": {...}, "rows": [{"artifact": DIR, "latencies_ms": [...], "peak_rss_mb"?, "load_ms"?,
    "threads"?}]}`, each DIR an artifact folder here whose metadata.json says what was timed."""
    if not path.is_file():
        raise FileNotFoundError(f"--import {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--import {path} is not JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise ValueError(f"--import {path} needs a non-empty `rows` list (and a `host` object)")
    rows = []
    for index, item in enumerate(data["rows"]):
        times = item.get("latencies_ms") if isinstance(item, dict) else None
        if not times or not all(isinstance(t, (int, float)) and t > 0 for t in times) or "artifact" not in item:
            raise ValueError(f"--import {path}: row {index} needs `artifact` (an exported folder) and `latencies_ms`, "
                             "a list of positive milliseconds")
        folder = Path(item["artifact"])
        metadata = read_metadata(folder)
        model = metadata["model"]
        row = _row(model["kind"], model["name"] if model["kind"] == "student" else None, Path(model["run"]),
                   metadata["target"], metadata["precision"], metadata["input"]["shape"][-1], False)
        stats = summarize_times([float(t) for t in times])
        row.update(artifact=str(folder), size_mb=round(artifact_bytes(folder) / 1e6, 3),
                   load_ms=item.get("load_ms"), peak_rss_mb=item.get("peak_rss_mb"), threads=item.get("threads"),
                   latency_ms_median=stats["median_ms"], latency_ms_p90=stats["p90_ms"],
                   latency_ms_std=stats["std_ms"], fps=round(1000.0 / stats["median_ms"], 1), runs=len(times))
        rows.append(row)
    host = data.get("host") if isinstance(data.get("host"), dict) else {}
    return {"meta": {**host, "imported_from": str(path), "runs": None, "warmup": None,
                     "timing": "imported: measured on the host above, not by this toolkit"}, "rows": rows}
