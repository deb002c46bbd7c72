"""Latency per image of ONNX artifacts in the browser demo (headless Chromium, onnxruntime-web's WebAssembly backend)
next to ONNX Runtime in Python on the same artifact and the same number of threads.

    python benchmarks/web_latency.py --artifact runs/quickstart/exports/student/onnx-int8-64px \
        --artifact runs/quickstart/exports/student/onnx-int8-448px --image runs/quickstart/data/val/images/00000000.jpg \
        [--threads 2] [--warmup 5] [--runs 30] [--json benchmarks/results/web_latency.json]

Each artifact is open in a page of its own (`mixreorg-edge demo`'s server); the page times `session.run` itself, so the
browser's numbers hold no DevTools round trip. Calls are interleaved: every round runs each (artifact, runtime) once
in turn, so a slow phase of a shared host falls on all of them alike. Prints a table and writes JSON."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mixreorg_edge import browser
from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import write_results
from mixreorg_edge.bench.timing import summarize_times
from mixreorg_edge.demo import find_web_dir, running_demo
from mixreorg_edge.export.artifact import read_metadata
from mixreorg_edge.export.images import preprocess
from mixreorg_edge.export.target import get_target

RESULTS = Path(__file__).parent / "results"


def _python_runner(artifact: Path, image: Path, threads: int):
    from PIL import Image

    metadata = read_metadata(artifact)
    run = get_target("onnx").load(artifact / metadata["model_file"], threads=threads)
    with Image.open(image) as picture:
        x = preprocess(picture, tuple(metadata["input"]["shape"][2:])).numpy()

    def timed() -> float:
        start = time.perf_counter()
        run(x)
        return (time.perf_counter() - start) * 1000.0

    return timed


def _browser_runner(page):
    return lambda: page.evaluate("() => mixreorgDemo.benchmark(1)")[0]


def _versions() -> dict[str, str]:
    chromium = subprocess.run([browser.chromium_path(), "--version"], capture_output=True, text=True).stdout.strip()
    package = json.loads((find_web_dir() / "package.json").read_text())
    return {"chromium": chromium, "onnxruntime-web": package["dependencies"]["onnxruntime-web"],
            "onnxruntime": version("onnxruntime"), "playwright": version("playwright")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, action="append", required=True, help="an ONNX artifact folder")
    parser.add_argument("--image", type=Path, required=True, help="an image the models are timed on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", type=Path, default=RESULTS / "web_latency.json")
    args = parser.parse_args()
    missing = browser.browser_missing()
    if missing:
        raise SystemExit(missing)
    console = Console(width=150)
    timers: dict[tuple[str, str], object] = {}
    backends: dict[str, str] = {}
    with ExitStack() as stack:
        chromium = stack.enter_context(browser.headless_chromium())
        for artifact in args.artifact:
            url = stack.enter_context(running_demo(artifact))
            page = browser.open_demo(chromium, url, threads=args.threads)
            browser.segment(page, args.image)
            state = browser.demo_state(page)
            if state["error"]:
                raise SystemExit(f"{artifact}: {state['error']}")
            backends[str(artifact)] = state["backend"]
            timers[(str(artifact), "onnxruntime-web")] = _browser_runner(page)
            timers[(str(artifact), "onnxruntime (Python)")] = _python_runner(artifact, args.image, args.threads)
        for timer in timers.values():
            for _ in range(args.warmup):
                timer()
        times: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
        for _ in range(args.runs):
            for key, timer in timers.items():
                times[key].append(timer())
    rows = []
    for (artifact, runtime), values in times.items():
        metadata = read_metadata(Path(artifact))
        summary = summarize_times(values)
        rows.append({"artifact": artifact, "model": metadata["model"]["name"], "precision": metadata["precision"],
                     "imgsz": metadata["input"]["shape"][2], "runtime": runtime,
                     "backend": backends[artifact] if runtime == "onnxruntime-web" else "CPU execution provider",
                     "threads": args.threads, "latency_ms_median": summary["median_ms"],
                     "latency_ms_p90": summary["p90_ms"], "latency_ms_std": summary["std_ms"],
                     "runs": summary["runs"], "warmup": args.warmup})
    for row in rows:
        python = next(r for r in rows if r["artifact"] == row["artifact"] and r["runtime"] != "onnxruntime-web")
        row["vs_python"] = round(row["latency_ms_median"] / python["latency_ms_median"], 2)
    table = Table(title=f"latency per image, batch 1, {args.threads} threads, median of {args.runs} interleaved runs")
    for column in ("model", "precision", "px", "runtime", "backend", "median ms", "p90 ms", "x Python"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], row["precision"], str(row["imgsz"]), row["runtime"], row["backend"],
                      f"{row['latency_ms_median']:.1f}", f"{row['latency_ms_p90']:.1f}", f"{row['vs_python']:.2f}")
    console.print(table)
    host = host_info()
    host.pop("threads", None)  # torch's threads in this process: not what either runtime used
    write_results(args.json, {**host, "versions": _versions(), "image": str(args.image), "threads": args.threads}, rows)
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
