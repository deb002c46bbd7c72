"""Latency against input size and threads: the paper-size `vit-s` teacher in PyTorch eager against students, fp32
and int8, on the runtimes given, through the same machinery as `mixreorg-edge benchmark` (each format in a process
of its own, timed round-robin per input size). One benchmark per thread count; exports are made once and reused.

    python benchmarks/scaling.py --models RUN [RUN ...] --data WORLD/val --targets executorch \
        [--sizes 256 384 448 512 640] [--threads 1 2] [--json benchmarks/results/scaling.json] \
        [--plot benchmarks/results/scaling.png]

Writes the rows of every run (with `threads`) as JSON and a plot of median latency against input size, one line per
format and thread count."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from mixreorg_edge.bench.report import write_results
from mixreorg_edge.bench.suite import PASSED, BenchmarkRequest, run_benchmark
from mixreorg_edge.bench.summary import print_report, row_name

RESULTS = Path(__file__).parent / "results"


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(10, 6))
    lines: dict[tuple, list[tuple[int, float]]] = {}
    for row in rows:
        if row["status"] == PASSED and row["latency_ms_median"] is not None:
            key = (row_name(row), row["target"], row["precision"], row["threads"])
            lines.setdefault(key, []).append((row["imgsz"], row["latency_ms_median"]))
    formats = sorted({key[:3] for key in lines})  # one colour per format, one line style per thread count
    colours = matplotlib.colormaps["tab10"]
    for (name, target, precision, threads), points in sorted(lines.items()):
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                  color=colours(formats.index((name, target, precision)) % 10),
                  linestyle="-" if threads > 1 else "--", label=f"{name}: {target} {precision}, {threads} thr")
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axis.set_xlabel("input side, px (square, batch 1); solid: 2 threads, dashed: 1")
    axis.set_ylabel("median latency per image, ms (log)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    figure.savefig(out, dpi=130)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="student runs")
    parser.add_argument("--data", type=Path, required=True, help="labelled validation split (exports' parity)")
    parser.add_argument("--targets", nargs="+", default=["executorch"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 448, 512, 640])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib-images", type=int, default=64, help="int8 calibration images")
    parser.add_argument("--parity-images", type=int, default=32, help="each export's parity check")
    parser.add_argument("--artifacts", type=Path, default=Path("/tmp/scaling_artifacts"),
                        help="exports, reused while up to date (give a benchmark's --artifacts to reuse its exports)")
    parser.add_argument("--json", type=Path, default=RESULTS / "scaling.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "scaling.png")
    args = parser.parse_args()
    console = Console(width=200)
    rows, meta = [], {}
    for threads in args.threads:
        request = BenchmarkRequest(models=args.models, data=args.data, targets=args.targets,
                                   precisions=args.precisions, sizes=args.sizes, threads=threads, runs=args.runs,
                                   artifacts=args.artifacts, calib_images=args.calib_images,
                                   parity_images=args.parity_images, teacher_rows=False)
        report = run_benchmark(request, console)
        print_report(report, console)
        rows += report["rows"]
        meta = report["meta"]
    meta.update(threads=args.threads, command="python benchmarks/scaling.py " + " ".join(
        ["--models", *map(str, args.models), "--data", str(args.data), "--targets", *args.targets, "--sizes",
         *map(str, args.sizes), "--threads", *map(str, args.threads)]))
    write_results(args.json, meta, rows)
    plot(rows, args.plot)
    console.print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
