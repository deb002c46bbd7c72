"""How fast the training data pipeline feeds a GPU: images a second read from WebDataset shards, decoded, resized
and center-cropped to 224 px and batched (`CaptionBatches`, what `train-teacher` reads), with 0, 1 and 2 DataLoader
worker processes (`train-teacher --workers`). Nothing is trained; the numbers say what one GPU can be fed per CPU
core. Writes benchmarks/results/data_throughput.json.

    python benchmarks/data_throughput.py                       # a synthetic world of 256-px JPEGs, made in /tmp
    python benchmarks/data_throughput.py --data '/data/cc12m/{00000..00009}.tar'   # your own shards
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mixreorg_edge.bench.host import cpu_generation, cpu_model
from mixreorg_edge.data.loader import WorkerBatches
from mixreorg_edge.data.shards import CaptionBatches, ImageTextShards
from mixreorg_edge.data.synth import write_synthetic_world

RESULTS = Path(__file__).parent / "results" / "data_throughput.json"


def images_per_second(shards: ImageTextShards, workers: int, batch: int, size: int, steps: int, warmup: int) -> float:
    """Batches of `steps` steps after `warmup` untimed ones (the workers' start-up), in images a second."""
    batches = CaptionBatches(shards, batch, size, seed=0)
    next_batch = WorkerBatches(batches, 0, workers).batch if workers else batches.batch
    for step in range(warmup):
        next_batch(step)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        next_batch(step)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="Shards (a folder, brace pattern or list); default: a synthetic world")
    parser.add_argument("--source-size", type=int, default=256, help="Side of the synthetic world's JPEGs")
    parser.add_argument("--images", type=int, default=2048, help="Images of the synthetic world")
    parser.add_argument("--size", type=int, default=224, help="Decoded side (the vit-s preset's)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="Timed batches per setting")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed batches first")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if data is None:
            write_synthetic_world(Path(scratch), train=args.images, val=0, size=args.source_size, seed=0)
            data = str(Path(scratch) / "train")
        shards = ImageTextShards(data)
        load_before = os.getloadavg()[0]  # other work on the machine slows every setting
        rows = []
        for workers in args.workers:
            rate = images_per_second(shards, workers, args.batch, args.size, args.steps, args.warmup)
            rows.append({"workers": workers, "images_per_s": round(rate, 1)})
            print(f"{workers} worker(s): {rate:.0f} images/s decoded and batched at {args.size} px")
    report = {
        "measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cpu_generation": cpu_generation(), "cpu_cores": len(os.sched_getaffinity(0)),
        "data": args.data or f"synthetic world, {args.images} JPEGs of {args.source_size} px",
        "size": args.size, "batch": args.batch, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
