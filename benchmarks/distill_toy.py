"""Distil several mobile students from one toy teacher with one budget, and compare them with the teacher:
parameters, GFLOPs and eager CPU latency at 448x448 (BatchNorm folded, channels-last; the deployed graph: student +
vocabulary head + background rule + upsampling; the network alone, image -> embedding map; and a student's timm
backbone alone, see bench.graphs), `objects` and `context` mIoU, retention (student / teacher mIoU) and speedup versus the paper-size teacher (`vit-s` preset architecture; its weights do not
matter for timing). A student run already distilled for the same number of steps is reused. Students are distilled
(`--jobs` at once) and evaluated first; then every model's graphs are timed interleaved (round-robin, one call of
each per round), so a slow phase of this noisy host slows every model alike and the speedups stay comparable.
With `--tune-data`, every model's background bias is calibrated on that labelled split first (`objects_miou` is
then the calibrated score, `objects_miou_uncalibrated` the one at bias 0).

    python benchmarks/distill_toy.py --teacher runs/quickstart/teacher --data runs/quickstart/data \
        --tune-data runs/quickstart/tune/val

Writes benchmarks/results/distill_toy.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import torch
from rich.console import Console

from mixreorg_edge.bench.graphs import speedups, time_interleaved, timing_graphs
from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.distill.train import DistillConfig, default_train_config, distill
from mixreorg_edge.calibration import CALIBRATION_FILE
from mixreorg_edge.pipeline import calibrate_run, evaluate_run
from mixreorg_edge.checkpoint import fingerprint, load_model_state
from mixreorg_edge.runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, load_model
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.presets import get_preset

RESULTS = Path(__file__).parent / "results" / "distill_toy.json"
DEFAULT_STUDENTS = ("mobilevit:xxs", "mobilevitv2:050", "efficientvit:b0", "mobilenetv4:conv_small", "repvit:m0_9",
                    "fastvit:t8")
SIZE = 448


def _finished_with(run: Path, steps: int, teacher_weights: str, train_data: Path) -> bool:
    """A finished student run of `steps` steps distilled from this teacher (fingerprint of its weights) on these
    images with `distill`'s default settings (a run of another teacher or data, or with other settings such as
    fewer cached images, is redone)."""
    if not (run / MODEL_FILE).exists():
        return False
    config = load_model_state(run / MODEL_FILE)[1]  # the run's config, with the step it was saved at
    return (config["step"] == steps and config.get("teacher_fingerprint") == teacher_weights
            and config.get("data") == str(train_data.resolve()) and config.get("distill") == asdict(DistillConfig()))


def evaluate_objects(run: Path, val: Path, tune: Path | None, calibration: Path) -> dict:
    """`objects` mIoU of a run on `val` without calibration (background bias 0) and, given a labelled tuning split,
    at the background bias calibrated on it (recorded in `calibration`); `objects_miou` is the calibrated one then.
    `objects_miou_unrefined`: GroupViT's protocol without the model's mask refinement (the same when it has none)."""
    if tune is None:
        scores = evaluate_run(run, val, "objects", background_bias=0.0)
    else:
        calibrate_run(run, tune, "objects", out=calibration)
        scores = evaluate_run(run, val, "objects", calibration=calibration)
    return {"objects_miou": round(scores["miou"], 2), "objects_miou_uncalibrated": round(scores["miou_uncalibrated"], 2),
            "objects_miou_unrefined": round(scores.get("miou_unrefined", scores["miou"]), 2),
            "background_bias": scores["background_bias"]}


def distil_and_evaluate(
    student: str, teacher: Path, teacher_weights: str, data: Path, runs: Path, steps: int, threads: int,
    tune: Path | None = None,
) -> dict:
    """Distil `student` from `teacher` (fingerprint `teacher_weights`), or reuse a finished run of it, and evaluate
    it: its result row, no cost yet."""
    torch.set_num_threads(threads)
    run = runs / student.replace(":", "-")
    train_cfg = default_train_config()
    train_cfg.steps = steps
    if _finished_with(run, steps, teacher_weights, data / "train"):
        seconds = json.loads((run / METRICS_FILE).read_text().splitlines()[-1])["elapsed"]  # reuse a finished run
        distill_threads = json.loads((run / CONFIG_FILE).read_text())["provenance"]["threads"]  # as it was distilled
        reused = True
    else:
        if run.exists():  # unfinished, or of another teacher or settings: this benchmark's own scratch run
            Console().print(f"{run}: not a finished run of this teacher and settings, redistilling")
            shutil.rmtree(run)
        seconds = distill(teacher, student, data / "train", run, train_cfg, show_progress=False).seconds
        distill_threads, reused = threads, False
    objects = evaluate_objects(run, data / "val", tune, run / CALIBRATION_FILE)
    context = evaluate_run(run, data / "val", "context")["miou"]
    Console().print(f"{student}: objects mIoU {objects['objects_miou']:.2f}, distilled in {seconds:.0f} s")
    return {"model": student, "run": str(run), **objects, "context_miou": round(context, 2),
            "distill_seconds": round(seconds, 1), "distill_steps": steps, "distill_threads": distill_threads,
            "reused_run": reused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="toy teacher run")
    parser.add_argument("--data", type=Path, required=True, help="synthetic world (train/ shards + val/ folder)")
    parser.add_argument("--runs", type=Path, default=Path("runs/distill_toy"))
    parser.add_argument("--students", nargs="+", default=list(DEFAULT_STUDENTS))
    parser.add_argument(
        "--steps", type=int, default=default_train_config().steps, help="steps per student (`distill`'s default)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="students distilled at once (threads split between them)")
    parser.add_argument("--latency-runs", type=int, default=40, help="timed rounds (every graph once per round)")
    parser.add_argument("--latency-threads", type=int, default=None,
                        help="threads for the timing (default: all of torch's; 1 = the single-core figure mobile papers quote)")
    parser.add_argument("--tune-data", type=Path, default=None,
                        help="labelled tuning split (e.g. `data synth --train 0 --seed 1`): every model's background "
                             "bias is calibrated on it; without it every model is scored uncalibrated (bias 0)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console(width=200)

    args.runs.mkdir(parents=True, exist_ok=True)
    teacher_objects = evaluate_objects(args.teacher, args.data / "val", args.tune_data,
                                       args.runs / "teacher_calibration.json")  # the teacher's own run stays as is
    teacher_miou = teacher_objects["objects_miou"]
    teacher_context = evaluate_run(args.teacher, args.data / "val", "context")["miou"]
    teacher, _ = load_model(args.teacher)
    teacher_weights = fingerprint(teacher)
    threads = max(1, torch.get_num_threads() // args.jobs)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(distil_and_evaluate, student, args.teacher, teacher_weights, args.data, args.runs,
                               args.steps, threads, args.tune_data) for student in args.students]
        students = [future.result() for future in futures]

    # Costs last, with nothing else running: every graph is prepared first, then all are timed interleaved.
    if args.latency_threads is not None:
        torch.set_num_threads(args.latency_threads)
    vit_s = MixReorgTeacher(get_preset("vit-s")[0]).eval()  # the paper-size inference path; weights do not matter
    models = {"teacher-vit-s": vit_s, "teacher-toy": teacher}
    models.update({row["model"]: load_model(Path(row.pop("run")))[0] for row in students})
    costs, graphs = {}, {}
    for name, model in models.items():
        costs[name], graphs[name] = timing_graphs(model, SIZE)
    for name, latency in time_interleaved(graphs, SIZE, args.latency_runs).items():
        costs[name].update(latency)
    reference = {"model": "teacher-vit-s", "objects_miou": None, **costs["teacher-vit-s"]}
    rows = [reference, {"model": "teacher-toy", **teacher_objects,
                        "context_miou": round(teacher_context, 2), **costs["teacher-toy"]}]
    for row in students:
        row.update(costs[row["model"]])
        row["retention"] = round(row["objects_miou"] / teacher_miou, 4)
        row["retention_unrefined"] = round(row["objects_miou_unrefined"] / teacher_objects["objects_miou_unrefined"], 4)
        row["retention_context"] = round(row["context_miou"] / teacher_context, 4)
        row.update(speedups(reference, row, SIZE))
        row["miou_per_ms"] = round(row["objects_miou"] / row["latency_448_ms"], 4)
        rows.append(row)

    columns = ("model", "params_m", "gflops_448", "latency_448_ms", "latency_448_min_ms", "network_latency_448_ms",
               "objects_miou", "objects_miou_uncalibrated", "background_bias", "retention", "objects_miou_unrefined",
               "retention_unrefined", "context_miou",
               "retention_context", "speedup", "speedup_min", "speedup_network", "backbone_latency_448_ms",
               "speedup_backbone_bound")
    print_rows(f"students distilled for {args.steps} steps; latency at {SIZE}x{SIZE}, eager CPU, "
               f"{torch.get_num_threads()} threads, interleaved", rows, columns, console)
    if students:
        best = max(students, key=lambda row: row["miou_per_ms"])
        console.print(f"best mIoU per millisecond: {best['model']} ({best['miou_per_ms']:.3f})")
    meta = {**host_info(),
            "latency_graph": "eager, export.prepare_for_inference (BatchNorm folded, re-parameterised, channels-last)",
            "latency_protocol": "interleaved: 5 warm-up calls per graph, then latency_runs rounds of every graph once; "
                                "median (latency_448_ms) and min per graph",
            "steps": args.steps, "distill": asdict(DistillConfig()), "jobs": args.jobs, "teacher": str(args.teacher),
            "teacher_objects_miou": round(teacher_miou, 2), "teacher_context_miou": round(teacher_context, 2),
            "tune_data": None if args.tune_data is None else str(args.tune_data)}
    write_results(args.out, meta, rows)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
