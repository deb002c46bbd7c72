"""Like-for-like ablation of MixReorg's components on the toy preset (issue 31): every rung trains with the same data,
seeds and budget (equal steps, or equal minutes), is read out both per token and per group, has its background bias
calibrated and its variant chosen on a tuning split, and is scored on the validation split.

    python benchmarks/ablation_toy.py --data /tmp/world --tune-data /tmp/world_tune/val --minutes 10 --seeds 0 1 \\
        --jobs 2 --runs runs/ablation_toy
    python benchmarks/ablation_toy.py --data /tmp/world --tune-data /tmp/world_tune/val --steps 1200 --seeds 0 1 \\
        --jobs 2 --runs runs/ablation_toy

Rungs (each adds one component to the one before; ARMS): `baseline` (image-text contrastive and the preset's
keyword loss), `baseline-groupvit` (GroupViT: keywords matched by the image embedding), `+seg` (the mixed
segmentation loss on pixel-mixed images), `+contextual` (tokens mixed after 0, 1 or 2 per-image layers: three
variants), `+progressive` and `full` (restoration), both after 1 per-image layer, the paper's contextual patches
(`vit-s` mixes there too). Scores: GroupViT's protocol without the preset's mask refinement; `objects` at the bias
calibrated on the tuning split (`tune_miou` is that split's score there, which chooses each rung's variant; `miou`
val's), `miou_context` on val. A run already in `--runs` with the same config, seed and finished budget is reused.

Writes one JSON per budget (default benchmarks/results/ablation_toy_<budget>.json): `runs`, one row per run and
readout; `rungs`, per rung and readout (and `chosen`: the readout chosen on the tuning split too) the variant with the
best mean tuning score over the seeds, its val scores per seed, their mean and spread; and the host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from rich.console import Console

from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows
from mixreorg_edge.calibration import calibrate_background_bias
from mixreorg_edge.checkpoint import load_model_state
from mixreorg_edge.data.segfolder import SegmentationFolder
from mixreorg_edge.runs import MODEL_FILE, load_model
from mixreorg_edge.teacher.ablation import apply_variant
from mixreorg_edge.teacher.config import TeacherConfig
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.teacher.train import train_teacher
from mixreorg_edge.training import Budget, TrainConfig
from mixreorg_edge.zeroshot import ZeroShotProtocol, evaluate, evaluate_biases

RESULTS = Path(__file__).parent / "results"
READOUTS = ("token", "group")


@dataclass(frozen=True)
class Arm:
    """One trained configuration: a rung of the ladder (an ablation variant), at a context depth or the preset's."""

    rung: str
    context_depth: int | None = None

    @property
    def name(self) -> str:
        return self.rung if self.context_depth is None else f"{self.rung}@context{self.context_depth}"

    def teacher_config(self) -> tuple[TeacherConfig, TrainConfig]:
        teacher, train = get_preset("toy")
        apply_variant(teacher, self.rung)
        if self.context_depth is not None:
            teacher.mixing.context_depth = self.context_depth
        return teacher, train


ARMS = (
    Arm("baseline"), Arm("baseline-groupvit"), Arm("+seg"),
    Arm("+contextual", 0), Arm("+contextual", 1), Arm("+contextual", 2),
    Arm("+progressive", 1), Arm("full", 1),
)


def evaluate_with_readout(
    run: Path, data: Path, tune: Path, readout: str, protocol: ZeroShotProtocol
) -> dict[str, float]:
    """A run's teacher read out densely with `readout`: `objects` on the tuning split at the bias calibrated there,
    on val at that bias and at 0, and `context` on val."""
    model, _ = load_model(run)
    model.cfg.readout = readout
    calibration = calibrate_background_bias(model, SegmentationFolder(tune, "objects"), protocol)
    bias = calibration["background_bias"]
    scores = evaluate_biases(model, SegmentationFolder(data / "val", "objects"), protocol, (bias, 0.0))
    context = evaluate(model, SegmentationFolder(data / "val", "context"), protocol)["miou"]
    return {"tune_miou": round(calibration["tune_miou"], 2), "miou": round(scores[bias]["miou"], 2),
            "miou_uncalibrated": round(scores[0.0]["miou"], 2), "background_bias": bias,
            "miou_context": round(context, 2)}


def _finished(run: Path, teacher: TeacherConfig, train: TrainConfig) -> bool:
    """True when `run` already holds this exact configuration trained with the same seed to the end of the same
    budget (the evaluation protocol it recorded does not matter: every run is scored with the same one here)."""
    try:
        _, config = load_model_state(run / MODEL_FILE)
    except FileNotFoundError:
        return False
    trained = {key: value for key, value in config["teacher"].items() if key != "eval"}
    wanted = json.loads(json.dumps({key: value for key, value in teacher.to_dict().items() if key != "eval"}))
    recorded = config["train"]
    same_budget = (recorded.get("steps"), recorded.get("minutes"), recorded["seed"]) == (
        train.steps, train.minutes, train.seed)
    return trained == wanted and same_budget and Budget(train).done(config["step"], _last_metrics(run)["elapsed"])


def _last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def run_arm(arm: Arm, seed: int, budget: dict, data: Path, tune: Path, runs: Path, threads: int) -> list[dict]:
    """Train (or reuse) one arm with one seed and score it with both readouts: one row per readout."""
    torch.set_num_threads(threads)
    teacher_cfg, train_cfg = arm.teacher_config()
    train_cfg.steps, train_cfg.minutes, train_cfg.seed = budget.get("steps"), budget.get("minutes"), seed
    run = runs / arm.name / f"seed{seed}"
    reused = _finished(run, teacher_cfg, train_cfg)
    if not reused:
        train_teacher(data / "train", run, teacher_cfg, train_cfg, show_progress=False)
    protocol = ZeroShotProtocol(teacher_cfg.eval.short_side, teacher_cfg.eval.window, teacher_cfg.eval.stride)
    last = _last_metrics(run)
    trained = {"rung": arm.rung, "arm": arm.name, "context_depth": teacher_cfg.mixing.context_depth, "seed": seed,
               "steps": last["step"], "train_seconds": round(last["elapsed"], 1), "final_loss": round(last["loss"], 4),
               "threads": threads, "run": str(run), "reused_run": reused}
    return [{**trained, "readout": readout, **evaluate_with_readout(run, data, tune, readout, protocol)}
            for readout in READOUTS]


def _chosen(rows: list[dict]) -> dict:
    """Among `rows` (one rung, one or all readouts), the (arm, readout) with the best mean tuning score over the seeds,
    with its val scores per seed, mean and spread (max - min)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["readout"]), []).append(row)
    (arm, readout), best = max(groups.items(), key=lambda item: statistics.mean(r["tune_miou"] for r in item[1]))
    best = sorted(best, key=lambda row: row["seed"])
    summary = {"arm": arm, "readout": readout, "seeds": [row["seed"] for row in best],
               "candidates": sorted({name for name, _ in groups})}
    for key in ("tune_miou", "miou", "miou_context", "steps"):
        values = [row[key] for row in best]
        summary[key] = values
        summary[f"{key}_mean"] = round(statistics.mean(values), 2)
        summary[f"{key}_spread"] = round(max(values) - min(values), 2)
    return summary


def summarise(rows: list[dict]) -> list[dict]:
    """Per rung (ladder order), the variant chosen on the tuning split for each readout and for both together."""
    table = []
    for rung in dict.fromkeys(arm.rung for arm in ARMS):
        mine = [row for row in rows if row["rung"] == rung]
        if not mine:
            continue
        for readout in (*READOUTS, "chosen"):
            candidates = mine if readout == "chosen" else [row for row in mine if row["readout"] == readout]
            table.append({"rung": rung, "for_readout": readout, **_chosen(candidates)})
    return table


def _budget(args: argparse.Namespace) -> tuple[dict, str]:
    if (args.steps is None) == (args.minutes is None):
        raise SystemExit("give --steps N or --minutes M (one budget per run of this script, one JSON each)")
    if args.steps is not None:
        return {"steps": args.steps}, f"{args.steps}steps"
    return {"minutes": args.minutes}, f"{args.minutes:g}min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="synthetic world (train/ shards + val/ folder)")
    parser.add_argument("--tune-data", type=Path, required=True,
                        help="labelled tuning split (not val): background calibration and the choice of variants")
    parser.add_argument("--steps", type=int, default=None, help="equal steps: training steps per run")
    parser.add_argument("--minutes", type=float, default=None, help="equal time: training minutes per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=[arm.name for arm in ARMS], choices=[arm.name for arm in ARMS],
                        help="a subset of the ladder (default: all)")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation_toy"), help="where the runs go")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (threads split between them)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/ablation_toy_<budget>.json")
    args = parser.parse_args()
    budget, tag = _budget(args)
    out = args.out or RESULTS / f"ablation_toy_{tag}.json"
    arms = [arm for arm in ARMS if arm.name in args.arms]

    threads = args.threads or max(1, torch.get_num_threads() // args.jobs)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_arm, arm, seed, budget, args.data, args.tune_data, args.runs / tag, threads)
                   for arm in arms for seed in args.seeds]
        rows = [row for future in futures for row in future.result()]
    rungs = summarise(rows)

    shown = [{"rung": row["rung"], "readout": row["for_readout"], "chosen": f"{row['arm']}, {row['readout']}",
              "tune objects": f"{row['tune_miou_mean']:.2f}",
              "val objects": f"{row['miou_mean']:.2f} ± {row['miou_spread'] / 2:.2f}",
              "val context": f"{row['miou_context_mean']:.2f}", "steps": f"{row['steps_mean']:.0f}"} for row in rungs]
    what = f"{budget['steps']} steps" if "steps" in budget else f"{budget['minutes']:g} minutes"
    print_rows(f"MixReorg ablation, toy preset, {what}, seeds {args.seeds} (val mean ± half the seeds' spread)", shown)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"budget": budget, "seeds": args.seeds, "data": str(args.data), "tune_data": str(args.tune_data),
              "protocol": "GroupViT's (no mask refinement), objects calibrated on the tuning split",
              "host": {**host_info(), "threads_per_job": threads, "jobs": args.jobs},
              "seconds": round(time.perf_counter() - started, 1), "rungs": rungs, "runs": rows}
    out.write_text(json.dumps(record, indent=2) + "\n")
    Console().print(f"wrote {out}")


if __name__ == "__main__":
    main()
