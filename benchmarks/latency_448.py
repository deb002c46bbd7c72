"""Latency of students against the paper-size teacher, without distilling anything: weights do not change the
cost, so every student is freshly initialised (as the `vit-s` teacher is in distill_toy.py), with the `vit-s`
teacher's joint-space dimension. Per model, its
deployed graph (labels out), its network (embeddings out) and, for a student, its timm backbone alone, all
inference-prepared and timed interleaved at one input size (see mixreorg_edge.bench.graphs); speedups are against
`teacher-vit-s` from the same loop. `speedup_backbone_bound` (the teacher's network over the student's bare
backbone) bounds what any decoder or head on that backbone could reach on this host.

    python benchmarks/latency_448.py --threads 2

Writes benchmarks/results/latency_448.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from mixreorg_edge.bench.graphs import speedups, time_interleaved, timing_graphs
from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.distill.student import DenseStudent, StudentConfig
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.presets import get_preset

RESULTS = Path(__file__).parent / "results" / "latency_448.json"
DEFAULT_STUDENTS = ("mobilevit:xxs", "mobilevitv2:050", "efficientvit:b0", "mobilenetv4:conv_small")
REFERENCE = "teacher-vit-s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", nargs="+", default=list(DEFAULT_STUDENTS))
    parser.add_argument("--size", type=int, default=448, help="input side in pixels (a multiple of 32)")
    parser.add_argument("--runs", type=int, default=40, help="timed rounds (every graph once per round)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    size = args.size
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = MixReorgTeacher(get_preset("vit-s")[0]).eval()
    models = {REFERENCE: teacher}
    models.update({name: DenseStudent(StudentConfig(name, embed_dim=teacher.embed_dim, image_size=size)).eval()
                   for name in args.students})
    costs, graphs = {}, {}
    for name, model in models.items():
        costs[name], graphs[name] = timing_graphs(model, size)
    for name, latency in time_interleaved(graphs, size, args.runs).items():
        costs[name].update(latency)
    rows = [{"model": name, **costs[name]} for name in models]
    for row in rows[1:]:
        row.update(speedups(costs[REFERENCE], row, size))

    print_rows(f"latency at {size}x{size} (ms, median of {args.runs} interleaved rounds), eager CPU, "
               f"{torch.get_num_threads()} threads, fresh weights", rows,
               ("model", "params_m", f"gflops_{size}", f"latency_{size}_ms", f"latency_{size}_min_ms",
                f"network_latency_{size}_ms", f"backbone_latency_{size}_ms", "speedup", "speedup_min", "speedup_network",
                "speedup_backbone_bound"))
    meta = {**host_info(), "size": size, "runs": args.runs, "weights": "fresh (cost only)",
            "latency_graph": "eager, export.prepare_for_inference (BatchNorm folded, re-parameterised, channels-last)",
            "latency_protocol": "interleaved: 5 warm-up calls per graph, then `runs` rounds of every graph once"}
    write_results(args.out, meta, rows)
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
