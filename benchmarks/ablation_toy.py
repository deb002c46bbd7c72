"""Ablation of MixReorg's components on the toy preset: every variant trains with the same seed, data and step
budget, then is evaluated zero-shot on the synthetic validation split (objects and context).

    python benchmarks/ablation_toy.py --data runs/quickstart/data --tune-data runs/quickstart/tune/val --steps 600 --jobs 2

With `--tune-data` (a labelled split other than val), every variant's background bias is calibrated there first and
`miou` is the calibrated `objects` score (`miou_uncalibrated`: at bias 0). Writes
benchmarks/results/ablation_toy.json: a list of {"variant", "miou", "miou_context", ...} rows.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
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
from mixreorg_edge.teacher.ablation import LADDER, VARIANTS, apply_variant
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.teacher.train import train_teacher
from mixreorg_edge.zeroshot import ZeroShotProtocol, evaluate, evaluate_biases

RESULTS = Path(__file__).parent / "results" / "ablation_toy.json"


def evaluate_with_readout(
    run: Path, data: Path, readout: str, protocol: ZeroShotProtocol, tune: Path | None = None
) -> dict[str, float]:
    """Objects (uncalibrated and, given a tuning split, at the background bias calibrated there) and context mIoU
    of a run's teacher read out densely with `readout` ("group" or "token")."""
    model, _ = load_model(run)
    model.cfg.readout = readout
    objects = SegmentationFolder(data / "val", "objects")
    bias = 0.0
    if tune is not None:
        bias = calibrate_background_bias(model, SegmentationFolder(tune, "objects"), protocol)["background_bias"]
    scores = evaluate_biases(model, objects, protocol, (bias, 0.0))  # one pass: calibrated and uncalibrated
    calibrated, uncalibrated = scores[bias]["miou"], scores[0.0]["miou"]
    context = evaluate(model, SegmentationFolder(data / "val", "context"), protocol)["miou"]
    return {"miou": round(calibrated, 2), "miou_uncalibrated": round(uncalibrated, 2), "background_bias": bias,
            "miou_context": round(context, 2)}


def _finished(run: Path, teacher: dict, steps: int, seed: int) -> bool:
    """True when `run` already holds this exact variant trained for `steps` steps with `seed` (the evaluation
    protocol it recorded does not matter: every variant is evaluated with the preset's current sliding window)."""
    try:
        _, config = load_model_state(run / MODEL_FILE)
    except FileNotFoundError:
        return False
    trained = {key: value for key, value in config["teacher"].items() if key != "eval"}
    wanted = json.loads(json.dumps({key: value for key, value in teacher.items() if key != "eval"}))  # tuples -> lists
    return trained == wanted and config["step"] == steps and config["train"]["seed"] == seed


def _last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def _read_elapsed(run: Path) -> float:
    return round(_last_metrics(run)["elapsed"], 1)


def _read_final_loss(run: Path) -> float:
    return round(_last_metrics(run)["loss"], 4)


def run_variant(
    variant: str, data: Path, runs: Path, steps: int, seed: int, threads: int, tune: Path | None = None
) -> list[dict]:
    """Train one variant and evaluate it; a variant without mixing (the baselines: no segmentation loss on the
    tokens) is read out with GroupViT's own group readout, and also with the token readout, which it trains only
    through the keyword loss. Returns its result rows."""
    torch.set_num_threads(threads)
    teacher_cfg, train_cfg = get_preset("toy")
    apply_variant(teacher_cfg, variant)
    train_cfg.steps, train_cfg.seed = steps, seed
    run = runs / variant
    reused = _finished(run, teacher_cfg.to_dict(), steps, seed)  # a run made earlier (or by `train-teacher`)
    if not reused:
        train_teacher(data / "train", run, teacher_cfg, train_cfg, show_progress=False)
    # GroupViT's protocol without the preset's mask refinement: the ladder compares what training gives the logits.
    protocol = ZeroShotProtocol(teacher_cfg.eval.short_side, teacher_cfg.eval.window, teacher_cfg.eval.stride)
    readouts = [teacher_cfg.readout] if teacher_cfg.mixing.enabled else ["group", teacher_cfg.readout]
    rows = []
    for readout in dict.fromkeys(readouts):
        scores = evaluate_with_readout(runs / variant, data, readout, protocol, tune)
        name = variant if readout == readouts[0] else f"{variant} ({readout} readout)"
        rows.append({
            "variant": name,
            **scores,
            "readout": readout,
            "steps": steps,
            "train_seconds": _read_elapsed(run),
            "final_loss": _read_final_loss(run),
            "threads": threads,
            "run": str(runs / variant),
            "reused_run": reused,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="synthetic world (train/ shards + val/ folder)")
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation_toy"), help="where the runs go")
    parser.add_argument("--steps", type=int, default=600, help="training steps per variant (same for all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=[*LADDER, "baseline-groupvit", "full-context1"],
                        choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once (threads split between them)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--tune-data", type=Path, default=None,
                        help="labelled tuning split: calibrate every variant's background bias there (default: none)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    threads = args.threads or max(1, torch.get_num_threads() // args.jobs)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_variant, v, args.data, args.runs, args.steps, args.seed, threads, args.tune_data)
            for v in args.variants
        ]
        rows = [row for future in futures for row in future.result()]

    shown = [{"variant": row["variant"], "readout": row["readout"], "objects mIoU": f"{row['miou']:.2f}",
              "uncalibrated": f"{row['miou_uncalibrated']:.2f}", "bias": f"{row['background_bias']:g}",
              "context mIoU": f"{row['miou_context']:.2f}", "steps": row["steps"],
              "train s": f"{row['train_seconds']:.0f}", "final loss": f"{row['final_loss']:.3f}"} for row in rows]
    print_rows(f"MixReorg ablation, toy preset, {args.steps} steps, seed {args.seed}", shown)
    by_name = {row["variant"]: row for row in rows}
    if "full" in by_name:
        for baseline in (name for name in by_name if name.startswith("baseline")):
            margin = by_name["full"]["miou"] - by_name[baseline]["miou"]
            Console().print(f"full - {baseline}: {margin:+.2f} mIoU (target: >= +5)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    meta = {**host_info(), "cpu_threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - started, 1), "steps": args.steps, "seed": args.seed,
            "data": str(args.data), "tune_data": None if args.tune_data is None else str(args.tune_data),
            "reused_runs": sorted({row["run"] for row in rows if row["reused_run"]})}
    args.out.with_name(args.out.stem + "_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
