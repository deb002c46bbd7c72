"""The quickstart: the same library functions the CLI verbs call, in order, with a summary of every artifact."""

from __future__ import annotations

import shutil
import time
from importlib import resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from .bench.host import cpu_generation, cpu_model
from .calibration import calibrate_background_bias, calibrated_background_bias, calibration_file, write_calibration
from .data.standard_layouts import StandardLayoutDataset, open_segmentation_dataset
from .checkpoint import saved_step
from .runs import CONFIG_FILE, MODEL_FILE, STATE_FILE, load_model, load_text_model, write_json_atomic
from .refinement import MaskRefinement
from .zeroshot import ZeroShotProtocol, evaluate_settings

QUICKSTART_TRAIN_IMAGES = 20000
QUICKSTART_VAL_IMAGES = 500
QUICKSTART_TUNE_IMAGES = 250  # the background bias is one number: half the validation split's size tunes it
QUICKSTART_MINUTES = 6.0
QUICKSTART_STUDENT = "mobilevit:xxs"
QUICKSTART_DISTILL_STEPS = 1200  # a few minutes on 2 CPU cores; `distill` defaults to more (distill/train.py)
QUICKSTART_PRECISIONS = ("int8",)  # the student's exports to every target this host can run (eager fp32 is the reference row)
QUICKSTART_BENCHMARK_RUNS = 30
QUICKSTART_PARITY_IMAGES = 32  # each export's own check; the benchmark then labels the whole split
QUICKSTART_CALIBRATION_IMAGES = 32


def shipped_teacher() -> Path:
    """Directory of the toy teacher that ships with the package (made by `train-teacher`; see its config.json)."""
    return Path(str(resources.files("mixreorg_edge") / "assets" / "toy_teacher"))


def protocol_of(
    config: dict[str, Any], short_side: int | None = None, window: int | None = None, stride: int | None = None,
    refine_iterations: int | None = None,
) -> ZeroShotProtocol:
    """The zero-shot protocol recorded with a model; an override that is not None replaces its recorded value. Runs
    recorded before mask refinement existed are scored without it."""
    recorded = config["teacher"]["eval"]
    overrides = {"short_side": short_side, "window": window, "stride": stride}
    settings = {key: recorded[key] if value is None else value for key, value in overrides.items()}
    iterations = recorded.get("refine_iterations", 0) if refine_iterations is None else refine_iterations
    dilations = tuple(recorded.get("refine_dilations", MaskRefinement().dilations))
    return ZeroShotProtocol(**settings, refinement=MaskRefinement(iterations, dilations))


def evaluate_run(
    model_path: Path,
    data: Path,
    label_set: str,
    templates: str | None = None,
    show_progress: bool = False,
    short_side: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    background_bias: float | None = None,
    calibration: Path | None = None,
    refine_iterations: int | None = None,
) -> dict[str, Any]:
    """Load a run's model and evaluate it zero-shot on a segmentation folder, with the protocol recorded with the
    model unless `short_side` / `window` / `stride` / `refine_iterations` overrides are given, and the background
    bias calibrated for this label set (in `calibration`, default RUN/calibration.json; see calibration.py) unless
    `background_bias` is given. From the same forward pass: `miou_uncalibrated`, the mIoU at bias 0, and, when the
    protocol refines the logits, `miou_unrefined`, GroupViT's protocol without the refinement (at its own calibrated
    bias, `background_bias_unrefined`; a given `background_bias` serves both)."""
    dataset = open_segmentation_dataset(data, label_set)
    model, config = load_model(model_path)
    templates = templates or config["teacher"]["eval"]["templates"]
    protocol = protocol_of(config, short_side, window, stride, refine_iterations)
    source: dict[str, Any] | None = {"override": True}
    if background_bias is None:
        background_bias, unrefined_bias, source = calibrated_background_bias(model_path, dataset, protocol, calibration)
    else:
        unrefined_bias = background_bias
    bias, unrefined_bias = float(background_bias), float(unrefined_bias)
    settings = [(bias, True), (0.0, True)] + ([(unrefined_bias, False)] if protocol.refinement.enabled else [])
    scores = evaluate_settings(model, dataset, protocol, settings, templates=templates, show_progress=show_progress,
                               text_model=load_text_model(model, config))
    result = {"model": str(model_path), **scores[(bias, True)], "miou_uncalibrated": scores[(0.0, True)]["miou"],
              "calibration": source}
    if protocol.refinement.enabled:
        result.update(miou_unrefined=scores[(unrefined_bias, False)]["miou"], background_bias_unrefined=unrefined_bias)
    return result


def calibrate_run(
    model_path: Path, data: Path, label_set: str, templates: str | None = None, out: Path | None = None,
    show_progress: bool = False, refine_iterations: int | None = None,
) -> dict[str, Any]:
    """Calibrate a run's background bias for `label_set` on the labelled tuning split `data` (never the split its
    scores are reported on) and record it in `out` (default RUN/calibration.json); returns the entry."""
    dataset = open_segmentation_dataset(data, label_set)
    if isinstance(dataset, StandardLayoutDataset):
        raise ValueError(f"{data} is read as {dataset.layout.title}'s validation split, which scores are reported on; "
                         f"its background uses GroupViT's fixed threshold. Calibrate on another labelled split, a "
                         f"folder with classes.json and background words")
    model, config = load_model(model_path)
    templates = templates or config["teacher"]["eval"]["templates"]
    protocol = protocol_of(config, refine_iterations=refine_iterations)
    entry = calibrate_background_bias(model, dataset, protocol, templates, load_text_model(model, config),
                                      show_progress=show_progress)
    path = out or calibration_file(model_path)
    replaced = write_calibration(path, entry)
    return {**entry, "file": str(path), "replaced": replaced}


def runnable_targets() -> list[str]:
    """The export targets this host can export to and run (Core ML needs macOS, TensorRT CUDA)."""
    from .export.target import TARGET_NAMES, get_target

    return [name for name in TARGET_NAMES if not (get_target(name).missing() or get_target(name).cannot_run())]


def benchmark_student(student_dir: Path, data_dir: Path, out: Path, targets: Sequence[str],
                      console: Console) -> dict[str, Any]:
    """The student exported to `targets` in int8 (calibrated on training images) and benchmarked with its
    teacher on this host: report files in `out` (benchmark.json, .md, .png) and, per artifact, `{target,
    precision, path, status, miou}`."""
    from .bench import summary
    from .bench.suite import PYTORCH, BenchmarkRequest, run_benchmark

    request = BenchmarkRequest(models=[student_dir], data=data_dir / "val", targets=list(targets),
                               precisions=list(QUICKSTART_PRECISIONS), calib=data_dir / "train",
                               calib_images=QUICKSTART_CALIBRATION_IMAGES, artifacts=out / "exports",
                               parity_images=QUICKSTART_PARITY_IMAGES, runs=QUICKSTART_BENCHMARK_RUNS)
    report = run_benchmark(request, console)
    summary.print_report(report, console)
    files = {"benchmark_json": out / "benchmark.json", "benchmark_markdown": out / "benchmark.md",
             "benchmark_plot": out / "benchmark.png"}
    summary.write_report(report, *files.values())
    exports = [{"target": row["target"], "precision": row["precision"], "path": row["artifact"],
                "status": row["status"], "miou": row["miou"]} for row in report["rows"] if row["target"] != PYTORCH]
    return {**{key: str(path) for key, path in files.items()}, "exports": exports}


def example_overlay(runs: dict[str, Path], image_path: Path, out: Path) -> Path:
    """Overlays of one image by each run (title -> run), side by side with their titles, as a PNG at `out`."""
    from PIL import Image, ImageDraw

    from .head import VocabularyHead
    from .overlay import draw_overlay
    from .segment import read_image, run_vocabulary
    from .zeroshot import predict_label_map

    image = read_image(image_path)
    panels = []
    for title, run in runs.items():
        model, config, vocabulary = run_vocabulary(run, "synthetic-objects", None)
        labels = predict_label_map(model, VocabularyHead(vocabulary), image, protocol_of(config))
        panels.append((title, draw_overlay(image, labels, vocabulary.label_set)))
    header = 24
    canvas = Image.new("RGB", (sum(p.width for _, p in panels) + 12 * (len(panels) - 1),
                               header + max(p.height for _, p in panels)), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for title, panel in panels:
        canvas.paste(panel, (x, header))
        draw.text((x + 4, 4), title, fill=(0, 0, 0), font_size=16)
        x += panel.width + 12
    canvas.save(out)
    return out


def folder_megabytes(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6, 1)


def _unrefined_note(scores: dict[str, Any]) -> str:
    if "miou_unrefined" not in scores:
        return ""
    return f" (without the mask refinement: {scores['miou_unrefined']:.2f})"


def quickstart(
    out: Path,
    minutes: float | None = None,
    from_scratch: bool = False,
    seed: int = 0,
    console: Console | None = None,
    train_images: int = QUICKSTART_TRAIN_IMAGES,
    val_images: int = QUICKSTART_VAL_IMAGES,
    distill_steps: int = QUICKSTART_DISTILL_STEPS,
    targets: Sequence[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Synthetic world (+ a labelled tuning split) -> toy teacher (shipped, or trained with `from_scratch`) ->
    background calibration on the tuning split -> zero-shot eval -> MobileViT student distilled from it ->
    calibration -> eval -> int8 exports to `targets` (default: every target this host can run; empty: no
    export) benchmarked on this host -> summary.json with every artifact path and headline figure. `resume`
    continues a quickstart in `out` that stopped: a complete world and the teacher are reused, distillation resumes
    from its checkpoint (or is skipped when it finished), exports are reused while up to date; the evaluations run
    again."""
    from .data.synth import write_synthetic_world
    from .distill.train import default_train_config, distill
    from .teacher.presets import get_preset
    from .teacher.train import train_teacher

    # Checked before minutes of data generation and evaluation, not when the step that needs them starts.
    if distill_steps < 1:
        raise ValueError(f"distill_steps must be at least 1, got {distill_steps}")
    if minutes is not None and not from_scratch:
        raise ValueError("--minutes applies to --from-scratch training only")
    if from_scratch:
        teacher_cfg, train_cfg = get_preset("toy")
        train_cfg.minutes, train_cfg.seed = QUICKSTART_MINUTES if minutes is None else minutes, seed
        train_cfg.validate()
    console = console or Console()
    out = Path(out)
    if not resume and ((out / "teacher").exists() or (out / "student").exists()):
        raise FileExistsError(f"{out} already holds a quickstart; pass --resume to continue it, or choose another "
                              "--out")
    started = time.perf_counter()
    data_dir, teacher_dir, student_dir = out / "data", out / "teacher", out / "student"
    tune_dir = out / "tune" / "val"  # labelled, another seed: the background calibration is tuned here, not on val
    console.rule("1/5 synthetic caption world")
    tune_images = min(val_images, QUICKSTART_TUNE_IMAGES)
    for world, train, val, world_seed in ((data_dir, train_images, val_images, seed),
                                          (tune_dir.parent, 0, tune_images, seed + 1)):
        if resume and (world / "val" / "classes.json").is_file():  # written last: the world is complete
            console.print(f"reusing {world}")
        else:  # a world cut short has the same settings, so it is written again over itself
            write_synthetic_world(world, train=train, val=val, seed=world_seed)
    console.print(f"data: [bold]{data_dir}[/], tuning split [bold]{tune_dir}[/] ({time.perf_counter() - started:.0f} s)")

    stage_seconds = {"data": round(time.perf_counter() - started, 1)}
    console.rule("2/5 toy MixReorg teacher")
    if from_scratch:
        train_teacher(data_dir / "train", teacher_dir, teacher_cfg, train_cfg,
                      resume=resume and (teacher_dir / STATE_FILE).is_file())
        teacher_source = "trained from scratch"
    else:
        # The model only: a teacher-target cache that a local benchmark left next to the shipped weights stays there.
        shutil.copytree(shipped_teacher(), teacher_dir, ignore=shutil.ignore_patterns("cache"), dirs_exist_ok=resume)
        teacher_source = "shipped checkpoint (see its config.json for the command that made it)"
    console.print(f"teacher: [bold]{teacher_dir}[/] ({teacher_source})")

    teacher_calibration = calibrate_run(teacher_dir, tune_dir, "objects", show_progress=True)
    console.print(f"teacher background bias: [bold]{teacher_calibration['background_bias']:g}[/] (tuned on {tune_dir})")
    evaluations = {}
    for label_set in ("objects", "context"):
        scores = evaluate_run(teacher_dir, data_dir / "val", label_set, show_progress=True)
        write_json_atomic(out / f"teacher_eval_{label_set}.json", scores)
        evaluations[label_set] = scores
        console.print(f"teacher {label_set} mIoU: [bold]{scores['miou']:.2f}[/]" + _unrefined_note(scores))

    stage_seconds["teacher"] = round(time.perf_counter() - started - sum(stage_seconds.values()), 1)
    console.rule(f"3/5 distil a {QUICKSTART_STUDENT} student (images only)")
    student_train_cfg = default_train_config()
    student_train_cfg.seed, student_train_cfg.steps = seed, distill_steps
    resume_student = resume and (student_dir / STATE_FILE).is_file()
    if resume_student and saved_step(student_dir / STATE_FILE) >= distill_steps:
        console.print(f"reusing {student_dir} (distilled for {saved_step(student_dir / STATE_FILE)} steps)")
    else:
        distill(teacher_dir, QUICKSTART_STUDENT, data_dir / "train", student_dir, student_train_cfg,
                resume=resume_student)
    stage_seconds["distill"] = round(time.perf_counter() - started - sum(stage_seconds.values()), 1)
    console.rule("4/5 student zero-shot evaluation")
    student_calibration = calibrate_run(student_dir, tune_dir, "objects", show_progress=True)
    student_scores = evaluate_run(student_dir, data_dir / "val", "objects", show_progress=True)
    write_json_atomic(out / "student_eval_objects.json", student_scores)
    console.print(
        f"objects mIoU: teacher [bold]{evaluations['objects']['miou']:.2f}[/], "
        f"student {QUICKSTART_STUDENT} [bold]{student_scores['miou']:.2f}[/] "
        f"({student_scores['miou'] / max(evaluations['objects']['miou'], 1e-9):.0%} retained)"
        + _unrefined_note(student_scores)
    )

    stage_seconds["student_eval"] = round(time.perf_counter() - started - sum(stage_seconds.values()), 1)
    targets = runnable_targets() if targets is None else list(targets)
    benchmark: dict[str, Any] = {"exports": []}
    if targets:
        console.rule(f"5/5 NNCF int8, export to {', '.join(targets)} and benchmark on this host")
        benchmark = benchmark_student(student_dir, data_dir, out, targets, console)

    stage_seconds["benchmark"] = round(time.perf_counter() - started - sum(stage_seconds.values()), 1)
    overlay = example_overlay({"teacher (toy)": teacher_dir, f"student {QUICKSTART_STUDENT}": student_dir},
                              sorted((data_dir / "val" / "images").iterdir())[0], out / "overlay.png")

    summary = {
        "overlay": str(overlay),
        "data_dir": str(data_dir),
        "val_dir": str(data_dir / "val"),
        "teacher_run": str(teacher_dir),
        "teacher_source": teacher_source,
        "teacher_model": str(teacher_dir / MODEL_FILE),
        "teacher_config": str(teacher_dir / CONFIG_FILE),
        "tune_dir": str(tune_dir),
        "teacher_miou": evaluations["objects"]["miou"],
        "teacher_miou_uncalibrated": evaluations["objects"]["miou_uncalibrated"],
        # GroupViT's protocol without the mask refinement (None when the model's protocol does not refine)
        "teacher_miou_unrefined": evaluations["objects"].get("miou_unrefined"),
        "teacher_background_bias": teacher_calibration["background_bias"],
        "teacher_miou_context": evaluations["context"]["miou"],
        "teacher_eval_objects": str(out / "teacher_eval_objects.json"),
        "teacher_eval_context": str(out / "teacher_eval_context.json"),
        "student": QUICKSTART_STUDENT,
        "student_run": str(student_dir),
        "student_distill_steps": distill_steps,
        "student_miou": student_scores["miou"],
        "student_miou_uncalibrated": student_scores["miou_uncalibrated"],
        "student_miou_unrefined": student_scores.get("miou_unrefined"),
        "student_background_bias": student_calibration["background_bias"],
        "student_eval_objects": str(out / "student_eval_objects.json"),
        **benchmark,
        "cpu": cpu_model(),  # what `seconds` was measured on
        "cpu_generation": cpu_generation(),
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": stage_seconds,  # where `seconds` went (the overlay and the summary: the rest)
        "disk_mb": folder_megabytes(out),
        "target_cache_mb": folder_megabytes(teacher_dir / "cache") if (teacher_dir / "cache").exists() else 0.0,
        "target_cache": str(teacher_dir / "cache"),
    }
    write_json_atomic(out / "summary.json", summary)
    console.print(f"summary: [bold]{out / 'summary.json'}[/]")
    return summary
