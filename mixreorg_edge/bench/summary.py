"""How a benchmark's rows are shown: a rich table on the console, Markdown, and a plot of mIoU against latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# (row key, column title) of the tables; `name` is derived (see row_name)
COLUMNS = (("name", "model"), ("target", "target"), ("precision", "precision"), ("imgsz", "px"),
           ("status", "status"), ("size_mb", "MB"), ("load_ms", "load ms"), ("peak_rss_mb", "peak RSS MB"),
           ("latency_ms_median", "median ms"), ("latency_ms_p90", "p90 ms"), ("latency_ms_std", "std ms"),
           ("fps", "FPS"), ("threads", "threads"), ("miou", "mIoU"), ("pixel_agreement", "agreement"))


def row_name(row: dict[str, Any]) -> str:
    """'teacher-vit-s', 'teacher', or 'student mobilevit:xxs'."""
    return f"{row['model']} {row['student']}" if row.get("student") else row["model"]


def _cell(row: dict[str, Any], key: str) -> str:
    value = row_name(row) if key == "name" else row.get(key)
    if value is None:
        return "-"
    if key == "pixel_agreement":
        return f"{value:.2%}"
    return str(value)


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row that did not pass, with its reason."""
    return [f"{row_name(row)}, {row['target']} {row['precision']} {row['imgsz']}px: {row['status']}: {row['reason']}"
            for row in rows if row.get("reason")]


def _caption(meta: dict[str, Any]) -> str:
    if "imported_from" in meta:
        host = ", ".join(f"{key} {value}" for key, value in meta.items() if key not in ("imported_from", "timing")
                         and value is not None)
        return f"timings imported from {meta['imported_from']}, measured on: {host or 'a host it does not name'}"
    host = f"{meta.get('cpu')} ({meta.get('cpu_generation') or 'generation unknown'}), {meta.get('logical_cpus')} " \
           f"logical CPUs, {meta.get('os')}"
    return (f"{host}; {meta.get('threads')} threads; batch 1; latency over {meta.get('runs')} interleaved rounds "
            f"after {meta.get('warmup')} warm-up calls; mIoU ({meta.get('label_set')}) at each model's evaluation "
            "size only, through the row's own runtime")


def highlights(rows: list[dict[str, Any]]) -> list[str]:
    """What the table says per model and input size: its fastest passed format, that format's speed-up over the
    paper-size teacher in PyTorch eager and over the same runtime in fp32, and each int8 row's mIoU change against
    its fp32 row on the same runtime."""
    lines = []
    passed = [row for row in rows if row["status"] == "passed" and row.get("latency_ms_median")]
    for size in sorted({row["imgsz"] for row in passed}):
        sized = [row for row in passed if row["imgsz"] == size]
        paper = next((row for row in sized if row["model"] == "teacher-vit-s"), None)
        for name in dict.fromkeys(row_name(row) for row in sized if row["target"] != "pytorch"):
            formats = [row for row in sized if row_name(row) == name and row["target"] != "pytorch"]
            best = min(formats, key=lambda row: row["latency_ms_median"])
            line = (f"{name} at {size} px: fastest {best['target']} {best['precision']}, "
                    f"{best['latency_ms_median']:.2f} ms")
            if paper:
                line += f", {paper['latency_ms_median'] / best['latency_ms_median']:.1f}x teacher-vit-s eager"
            fp32 = next((row for row in formats if row["target"] == best["target"] and row["precision"] == "fp32"),
                        None)
            if fp32 is not None and fp32 is not best:
                line += f", {fp32['latency_ms_median'] / best['latency_ms_median']:.2f}x its fp32"
            drops = [f"{row['target']} {row['miou'] - fp32_row['miou']:+.2f}" for row in formats
                     if row["precision"] == "int8" and row.get("miou") is not None
                     for fp32_row in formats if fp32_row["target"] == row["target"]
                     and fp32_row["precision"] == "fp32" and fp32_row.get("miou") is not None]
            if drops:
                line += f"; int8 mIoU against fp32: {', '.join(drops)}"
            lines.append(line)
    return lines


def print_report(report: dict[str, Any], console: Console) -> None:
    """The rows as a table (at least 200 columns wide when the output is not a terminal, so logs stay readable) and
    the reason of every row that did not pass."""
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 200))
    table = Table(title="mixreorg-edge benchmark", caption=_caption(report["meta"]))
    for index, (_, title) in enumerate(COLUMNS):
        table.add_column(title, justify="left" if index < 5 else "right")
    for row in report["rows"]:
        style = None if row["status"] == "passed" else "yellow"
        table.add_row(*(_cell(row, key) for key, _ in COLUMNS), style=style)
    console.print(table)
    for note in _notes(report["rows"]):
        console.print(f"[yellow]{note}[/]")
    for line in highlights(report["rows"]):
        console.print(line, highlight=False)


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, the host and settings above it and the reasons below."""
    lines = ["# mixreorg-edge benchmark", "", _caption(report["meta"]) + ".", "",
             "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "|".join("---" if index < 5 else "---:" for index in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(_cell(row, key) for key, _ in COLUMNS) + " |" for row in report["rows"]]
    notes = _notes(report["rows"])
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    found = highlights(report["rows"])
    if found:
        lines += ["", *[f"- {line}" for line in found]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> Path:
    """mIoU against median latency, one point per measured row at its evaluation size; a second panel with the
    latency of every measured row at each other input size."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["rows"] if row.get("latency_ms_median") is not None]
    scored = [row for row in rows if row.get("miou") is not None]
    other_sizes = sorted({row["imgsz"] for row in rows if row.get("miou") is None})
    panels = 1 + len(other_sizes)
    height = max(4.8, 0.2 * max(len(scored), len(rows) / max(1, len(other_sizes) + 1)) + 1.5)  # legend, bars
    figure, axes = plt.subplots(1, panels, figsize=(9.5 * panels, height), squeeze=False)
    left = axes[0][0]
    markers = {"pytorch": "s", "executorch": "o", "onnx": "^", "openvino": "D", "coreml": "P", "tensorrt": "*"}
    colours = matplotlib.colormaps["tab20"]
    for index, row in enumerate(scored):
        left.scatter(row["latency_ms_median"], row["miou"], marker=markers.get(row["target"], "o"), s=70,
                     color=colours(index % 20), label=f"{row_name(row)}: {row['target']} {row['precision']}")
    if scored:
        left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    left.set_xscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    left.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    left.set_xlabel("median latency per image, ms (log)")
    left.set_ylabel(f"{report['meta'].get('label_set', 'objects')} mIoU")
    sizes = sorted({row["imgsz"] for row in scored})
    left.set_title(f"accuracy against latency at {', '.join(f'{s} px' for s in sizes) or 'the evaluation size'}")
    left.grid(True, which="both", alpha=0.3)
    for axis, size in zip(axes[0][1:], other_sizes):
        sized = sorted((row for row in rows if row["imgsz"] == size), key=lambda row: row["latency_ms_median"])
        labels = [f"{row_name(row)}, {row['target']} {row['precision']}" for row in sized]
        axis.barh(range(len(sized)), [row["latency_ms_median"] for row in sized], color="tab:blue")
        axis.set_yticks(range(len(sized)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_xlabel("median latency per image, ms (log)")
        axis.set_title(f"latency at {size} x {size} (no mIoU at this size)")
        axis.grid(True, axis="x", which="both", alpha=0.3)
    figure.suptitle(_caption(report["meta"]).split(";")[0], fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=130)
    plt.close(figure)
    return out


def write_report(report: dict[str, Any], json_out: Path | None = None, markdown_out: Path | None = None,
                 plot_out: Path | None = None) -> list[Path]:
    """The report as JSON, Markdown and a plot, each where a path is given; returns the files written."""
    from ..runs import write_json_atomic, write_text_atomic

    if json_out is not None:
        write_json_atomic(json_out, report)
    if markdown_out is not None:
        write_text_atomic(markdown_out, markdown(report))
    if plot_out is not None:
        plot(report, plot_out)
    return [path for path in (json_out, markdown_out, plot_out) if path is not None]
