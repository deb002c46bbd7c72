"""`mixreorg-edge`: a thin Typer layer; every verb parses options and calls one library function."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from .outputs import check_output_file, check_output_folder

app = typer.Typer(help="MixReorg teacher -> mobile students -> int8 -> ExecuTorch, Core ML, ONNX, OpenVINO and "
                         "TensorRT artifacts.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: generate the built-in synthetic caption world.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)
ConfigT = TypeVar("ConfigT")


def _user_errors(func: F) -> F:
    """Turn expected bad-input errors into one clear red line and exit status 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .data.shards import ShardIndexError
        from .training import TrainingInterrupted

        try:
            return func(*args, **kwargs)
        except (FileNotFoundError, FileExistsError, ValueError, ShardIndexError) as error:
            err_console.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(code=2) from None
        except TrainingInterrupted as stop:
            err_console.print(f"[bold yellow]interrupted by {stop.signal_name}:[/] {stop.run} saved at step "
                              f"{stop.step}; rerun the command with --resume to continue")
            raise typer.Exit(code=stop.exit_code) from None

    return wrapper  # type: ignore[return-value]


@data_app.command("synth")
@_user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", help="Output directory (train shards + val folder)."),
    train: int = typer.Option(20000, "--train", help="Training image-caption pairs."),
    val: int = typer.Option(500, "--val", help="Validation images with masks."),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Generator seed (same seed, same world)."),
    thing_colours: str = typer.Option(
        "by-class", "--thing-colours",
        help="by-class: each thing in a hue band of its own | free: most things in any colour, told apart by shape only.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the shards and validation images of a folder that holds other data."),
) -> None:
    """Generate the synthetic caption world: WebDataset training shards and a labelled validation folder."""
    check_output_folder(out, "--out")
    from .data.synth import write_synthetic_world

    summary = write_synthetic_world(out, train=train, val=val, size=size, seed=seed, thing_colours=thing_colours,
                                    overwrite=overwrite)
    console.print(f"wrote {train} training pairs and {val} validation images to [bold]{out}[/]")
    console.print_json(json.dumps(summary, default=str))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"mixreorg-edge {version('mixreorg-edge')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """MixReorg teacher -> mobile students -> int8 -> ExecuTorch, Core ML, ONNX, OpenVINO and TensorRT artifacts."""


def _override(config: ConfigT, **values: object) -> ConfigT:
    """Set the options the user gave (not None) on a config; return it."""
    for name, value in values.items():
        if value is not None:
            setattr(config, name, value)
    return config


_DATA_HELP = ("Shards: a directory of WebDataset .tar files (key.jpg + key.txt) or its parent, a brace pattern "
              "('/data/cc12m/{00000..01242}.tar') or a text file listing shards.")
_AUTO_RESUME_HELP = ("Resume the run in --out if it has a checkpoint, else start it (for re-queued cluster jobs; "
                     "what other tools call --resume auto).")
_BAD_SHARDS_HELP = "Missing or unreadable shards skipped before the run stops (default: 1 % of the shards named)."
_TENSORBOARD_HELP = "Also write TensorBoard event files in OUT/tensorboard (needs: pip install tensorboard)."


@app.command("train-teacher")
@_user_errors
def train_teacher_cmd(
    data: Path = typer.Option(..., "--data", help=_DATA_HELP),
    preset: str = typer.Option("toy", "--preset", help="toy | vit-s"),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or resume)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Train for N optimizer steps."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Train for M minutes of training time."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Override the preset's batch size (per process under torchrun)."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    auto_resume: bool = typer.Option(False, "--auto-resume", help=_AUTO_RESUME_HELP),
    workers: int = typer.Option(0, "--workers", help="DataLoader processes decoding batches ahead (per process)."),
    max_bad_shards: Optional[int] = typer.Option(None, "--max-bad-shards", help=_BAD_SHARDS_HELP),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=_TENSORBOARD_HELP),
    init_image: Optional[Path] = typer.Option(None, "--init-image", help="Local timm/DeiT ViT checkpoint."),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", help="Continue training a teacher run's weights (its architecture and keywords; "
        "a fresh optimizer and schedule from the preset)."
    ),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the preset's peak learning rate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the preset's seed."),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="MixReorg ablation variant: baseline | baseline-groupvit | +seg | +contextual | "
        "+progressive | full | full-context1 (default: the preset's own: toy = +contextual, vit-s = full)."),
    mix_fraction: Optional[float] = typer.Option(
        None, "--mix-fraction", help="Share of each batch's mixing groups that run the mixed and restoration "
        "branches (default 1: all); less makes a step cheaper."
    ),
    image_width: Optional[int] = typer.Option(
        None, "--image-width", help="Override the preset's image-encoder width (a multiple of its attention heads); "
        "narrower runs more steps in the same time."
    ),
) -> None:
    """Train the MixReorg teacher on image-caption shards (on many processes: torchrun --nproc_per_node N -m
    mixreorg_edge.cli train-teacher ...)."""
    check_output_folder(out, "--out")
    from .teacher.ablation import apply_variant
    from .teacher.presets import get_preset
    from .teacher.train import train_teacher
    from .training import has_checkpoint

    resume = resume or (auto_resume and has_checkpoint(out))

    if steps is not None and minutes is not None:
        raise ValueError("give --steps or --minutes, not both")
    if init_from is not None and variant is not None:
        raise ValueError("--variant cannot change the architecture of an --init-from teacher")
    teacher_cfg, train_cfg = get_preset(preset)
    if variant is not None:
        apply_variant(teacher_cfg, variant)
    for option, value in (("--mix-fraction", mix_fraction), ("--image-width", image_width)):
        if value is not None and (init_from is not None or (resume and not auto_resume)):  # auto: used if new
            raise ValueError(f"{option} applies to a new run; an --init-from or resumed run keeps its own")
    if mix_fraction is not None:
        if not teacher_cfg.mixing.enabled:
            raise ValueError(f"--mix-fraction: the variant {variant!r} does not mix")
        teacher_cfg.mixing.fraction = mix_fraction
    if image_width is not None:
        teacher_cfg.image.width = image_width
    train_cfg.steps, train_cfg.minutes = steps, minutes
    if steps is None and minutes is None and not resume:  # a resumed run keeps its budget unless one is given
        train_cfg.steps = 1000
        console.print("no --steps/--minutes given: training for 1000 steps")
    _override(train_cfg, batch_size=batch_size, save_every=save_every, seed=seed, lr=lr)
    result = train_teacher(
        data, out, teacher_cfg, train_cfg, resume=resume, init_image=init_image, init_from=init_from,
        workers=workers, max_bad_shards=max_bad_shards, tensorboard=tensorboard,
    )
    console.print(
        f"trained {result.steps} steps in {result.seconds / 60:.1f} min, final loss {result.final_loss:.3f}, "
        f"{result.metrics['corrupt_images']} corrupt images skipped -> [bold]{result.run}[/]"
    )
    _warn_truncated(result.metrics["truncated_shards"])
    _warn_bad_shards(result.metrics["bad_shards"])


def _warn_unseen(model: Path, classes: list[str], background_words: list[str]) -> None:
    """One yellow line naming the class names (and background words) whose words never occurred in the training
    captions of the model's teacher."""
    from .known_words import unseen_warning

    line = unseen_warning(model, [*classes, *background_words])
    if line:
        console.print(f"[yellow]warning:[/] {line}")


def _warn_bad_shards(shards: int) -> None:
    if shards:
        console.print(f"[yellow]warning:[/] {shards} shard(s) missing or unreadable were skipped (--max-bad-shards)")


def _warn_truncated(shards: int) -> None:
    if shards:
        console.print(f"[yellow]warning:[/] {shards} shard(s) end early (cut downloads?); their complete samples "
                      "were used")


@app.command("eval")
@_user_errors
def eval_cmd(
    model: Path = typer.Option(..., "--model", help="Teacher or student run directory (or its model.safetensors)."),
    data: Path = typer.Option(
        ..., "--data",
        help="Segmentation folder (images/, masks/<label-set>/, classes.json), or a benchmark's root in its standard "
             "layout (VOC2012, VOC2010 with Context, coco, ADEChallengeData2016) with --label-set voc|context|"
             "coco_object|ade20k.",
    ),
    label_set: str = typer.Option(
        "objects", "--label-set", help="objects | context (or any set in classes.json); voc | context | coco_object | "
                                       "ade20k for a benchmark's standard layout."
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON here."),
    templates: Optional[str] = typer.Option(None, "--templates", help="simple | ensemble (default: the model's)."),
    short_side: Optional[int] = typer.Option(None, "--short-side", help="Resize the short side to this (default: the model's)."),
    window: Optional[int] = typer.Option(None, "--window", help="Sliding-window size in pixels (default: the model's)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window stride in pixels (default: the model's)."),
    background_bias: Optional[float] = typer.Option(
        None, "--background-bias", help="Background log-prior (default: the run's calibration for this label set, else 0)."
    ),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Calibration file from `calibrate` (default: MODEL/calibration.json if present)."
    ),
    refine_iterations: Optional[int] = typer.Option(
        None, "--refine-iterations",
        help="Mask refinement iterations on the logits (default: the model's; 0 = off, GroupViT's protocol).",
    ),
) -> None:
    """Zero-shot segmentation mIoU with GroupViT's protocol and the model's mask refinement (the ones recorded with the
    model unless overridden)."""
    if json_out is not None:
        check_output_file(json_out, "--json")
    from .pipeline import evaluate_run

    scores = evaluate_run(model, data, label_set, templates=templates, show_progress=True,
                          short_side=short_side, window=window, stride=stride, background_bias=background_bias,
                          calibration=calibration, refine_iterations=refine_iterations)
    _print_scores(scores)
    _warn_unseen(model, list(scores["per_class_iou"]), scores["background_words"])
    if scores["background_words"]:
        source = scores["calibration"]
        how = ("given" if source.get("override") else f"calibrated on {source['tune_data']}") if source else (
            "uncalibrated: run `mixreorg-edge calibrate` on a labelled split other than this one")
        console.print(f"background bias {scores['background_bias']:g} ({how})")
        if scores["background_bias"]:
            console.print(f"mIoU at background bias 0 (uncalibrated): {scores['miou_uncalibrated']:.2f}")
    if "miou_unrefined" in scores:
        console.print(f"mIoU without the mask refinement (GroupViT's protocol, background bias "
                      f"{scores['background_bias_unrefined']:g}): {scores['miou_unrefined']:.2f}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(scores, indent=2) + "\n")
        console.print(f"scores written to [bold]{json_out}[/]")


@app.command("calibrate")
@_user_errors
def calibrate_cmd(
    model: Path = typer.Option(..., "--model", help="Teacher or student run directory (or its model.safetensors)."),
    data: Path = typer.Option(
        ..., "--data", help="A labelled tuning split, not the one scores are reported on (e.g. synth --train 0 --seed 1)."
    ),
    label_set: str = typer.Option("objects", "--label-set", help="A label set with a background class and words."),
    templates: Optional[str] = typer.Option(None, "--templates", help="simple | ensemble (default: the model's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Calibration file (default: MODEL/calibration.json)."),
    refine_iterations: Optional[int] = typer.Option(
        None, "--refine-iterations",
        help="Mask refinement iterations on the logits (default: the model's; 0 = off, GroupViT's protocol).",
    ),
) -> None:
    """Tune the background bias (a log-prior on the background class) on a labelled split and record it with the model."""
    if out is not None:
        check_output_file(out, "--out")
    from .pipeline import calibrate_run

    entry = calibrate_run(model, data, label_set, templates=templates, out=out, show_progress=True,
                          refine_iterations=refine_iterations)
    console.print(
        f"{label_set}: background bias [bold]{entry['background_bias']:g}[/], tuning-split mIoU "
        f"{entry['tune_miou']:.2f} (uncalibrated {entry['uncalibrated_tune_miou']:.2f}, {entry['num_images']} images) "
        f"-> [bold]{entry['file']}[/]"
    )
    if entry["replaced"] is not None:
        before = entry["replaced"]
        console.print(f"replaced the {label_set} calibration tuned on {before.get('tune_data')} (background bias "
                      f"{before.get('background_bias', 0):g})")
    if "unrefined" in entry:
        unrefined = entry["unrefined"]
        console.print(f"without the mask refinement: background bias {unrefined['background_bias']:g}, tuning-split "
                      f"mIoU {unrefined['tune_miou']:.2f} (uncalibrated {unrefined['uncalibrated_tune_miou']:.2f})")


@app.command("distill")
@_user_errors
def distill_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher run directory."),
    student: str = typer.Option("mobilevit", "--student", help="family[:size], e.g. mobilevit:xxs"),
    data: Path = typer.Option(..., "--data", help=_DATA_HELP + " Images are enough."),
    out: Path = typer.Option(..., "--out", help="Student run directory to create (or resume)."),
    steps: Optional[int] = typer.Option(
        None, "--steps", help="Optimizer steps (default: 4000). With --resume: the run's own unless given."
    ),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Images per step, per process under torchrun (default: 64)."),
    images: Optional[int] = typer.Option(
        None, "--images", help="Images whose teacher targets are cached and used (default: 20000)."
    ),
    feature_weight: Optional[float] = typer.Option(
        None, "--feature-weight", help="Weight of the (1 - cosine) loss to the teacher's embeddings (default: 1)."),
    logit_weight: Optional[float] = typer.Option(
        None, "--logit-weight", help="Weight of the KL loss to the teacher's word distribution (default: 1)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="KL temperature (default: 2)."),
    vocabulary: Optional[str] = typer.Option(
        None, "--vocabulary", help='Logit-distillation words: "captions" (default: their frequent words) or a class '
        'list (a built-in such as voc, a file or "a,b,c"; needed for image-only shards).'
    ),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Local timm backbone weights."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed: initialisation and batch order (default: 0)."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Where the teacher's targets are cached (default: TEACHER/cache; ~1 GB per image set)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    auto_resume: bool = typer.Option(False, "--auto-resume", help=_AUTO_RESUME_HELP),
    max_bad_shards: Optional[int] = typer.Option(None, "--max-bad-shards", help=_BAD_SHARDS_HELP),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=_TENSORBOARD_HELP),
) -> None:
    """Distil a teacher into a mobile student (dense feature + logit distillation; no labels, no captions); on many
    processes: torchrun --nproc_per_node N -m mixreorg_edge.cli distill ...)."""
    check_output_folder(out, "--out")
    from .distill.train import DistillConfig, default_train_config, distill
    from .training import has_checkpoint

    resume = resume or (auto_resume and has_checkpoint(out))

    train_cfg = _override(default_train_config(), steps=steps, batch_size=batch_size, seed=seed)
    if resume:  # the run keeps its saved budget unless --steps is given
        train_cfg.steps = steps
    distill_cfg = _override(DistillConfig(), images=images, feature_weight=feature_weight, logit_weight=logit_weight,
                            temperature=temperature, vocabulary=vocabulary)
    result = distill(teacher, student, data, out, train_cfg, distill_cfg, resume=resume, cache_dir=cache_dir,
                     backbone_weights=backbone_weights, max_bad_shards=max_bad_shards, tensorboard=tensorboard)
    used = json.loads((result.run / "config.json").read_text())["distill"]["images"]
    if images is not None and used < images:
        console.print(f"[yellow]warning:[/] --images {images}: the data holds {used} images; all of them were used "
                      "(config.json records that)")
    reused = "reused" if result.metrics["targets_reused"] else "computed"
    console.print(
        f"distilled {student} for {result.steps} steps in {result.seconds / 60:.1f} min (teacher targets {reused}), "
        f"final loss {result.final_loss:.4f}, {result.metrics['corrupt_images']} corrupt images skipped "
        f"-> [bold]{result.run}[/]"
    )
    _warn_truncated(result.metrics["truncated_shards"])
    _warn_bad_shards(result.metrics["bad_shards"])


vocab_app = typer.Typer(help="Vocabularies: class names -> teacher text embeddings, saved once.", no_args_is_help=True)
app.add_typer(vocab_app, name="vocab")


@vocab_app.command("build")
@_user_errors
def vocab_build(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher run directory."),
    classes: str = typer.Option(
        ..., "--classes", help='Built-in (voc, context, coco_object, ade20k, ...), a file, "a,b,c", or one name ("sun": '
        'against the background, sky, grass, water, sand, wall).'),
    templates: str = typer.Option("ensemble", "--templates", help="simple | ensemble"),
    background_bias: Optional[float] = typer.Option(
        None, "--background-bias",
        help="Background log-prior baked into the head (default: the teacher's calibration for these classes and "
             "unrefined logits, as a deployed graph computes them, else 0; a student calibrated with `calibrate` has "
             "its own).",
    ),
    out: Path = typer.Option(..., "--out", help="Vocabulary file (.safetensors)."),
) -> None:
    """Embed class names with a teacher's text encoder and save them as a vocabulary file."""
    check_output_file(out, "--out")
    from dataclasses import replace

    from .calibration import with_run_calibration
    from .export.metadata import vocabulary_json
    from .runs import load_model, write_json_atomic
    from .vocab import save_vocabulary, vocabulary_for

    model, config = load_model(teacher)
    if config.get("kind") != "teacher":
        raise ValueError(f"{teacher} is a {config.get('kind')} run; vocabularies are built by a teacher")
    vocabulary = vocabulary_for(model, classes, templates)
    if background_bias is None:
        vocabulary = with_run_calibration(teacher, vocabulary, refinement_iterations=0)  # deployed graphs: unrefined
    else:
        vocabulary = replace(vocabulary, background_bias=background_bias)
    save_vocabulary(vocabulary, out)
    twin = out.with_suffix(".json")
    write_json_atomic(twin, vocabulary_json(vocabulary))  # for apps: embeddings artifacts take it without this package
    console.print(
        f"{len(vocabulary.label_set)} classes ({len(vocabulary.background_words)} background words, background bias "
        f"{vocabulary.background_bias:g}), dimension {vocabulary.embed_dim}, teacher {vocabulary.teacher} -> [bold]{out}[/] "
        f"(and {twin.name} for apps)"
    )
    _warn_unseen(teacher, vocabulary.label_set, vocabulary.background_words)


@app.command("segment")
@_user_errors
def segment_cmd(
    model: Path = typer.Option(..., "--model", help="Teacher or student run directory."),
    image: Path = typer.Option(..., "--image", help="JPEG/PNG image of any size."),
    classes: Optional[str] = typer.Option(
        None, "--classes", help='Class names: "a,b,c", one name ("sun": against the background, sky, grass, water, '
        'sand, wall), a file, or a built-in set.'),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="A vocabulary file from `vocab build`."),
    out: Path = typer.Option(..., "--out", help="Overlay PNG to write."),
) -> None:
    """Segment one image and write a colour overlay with a legend."""
    check_output_file(out, "--out")
    from .segment import segment_image

    result = segment_image(model, image, out, classes=classes, vocab=vocab)
    if result["original_size"] != result["size"]:
        (width, height), (small_width, small_height) = result["original_size"], result["size"]
        console.print(f"[yellow]note:[/] {image.name} is {width}x{height} ({width * height / 1e6:.0f} MP): segmented "
                      f"at {small_width}x{small_height} to bound memory (the overlay too)")
    shares = ", ".join(f"{name} {share:.0%}" for name, share in result["fractions"].items())
    console.print(f"{shares}\noverlay -> [bold]{result['out']}[/]")
    _warn_unseen(model, result["classes"], result["background_words"])


def _export(request, title: str) -> dict:
    """Run an export request, print where the artifact went and how it checked; ParityError: exit 1."""
    from .export.artifact import export_artifact
    from .export.parity import ParityError

    try:
        metadata = export_artifact(request, log=lambda line: console.print(line, highlight=False))
    except ParityError as error:
        err_console.print(f"[bold red]parity failed:[/] {error}")
        raise typer.Exit(code=1) from None
    parity = metadata["parity"]
    if isinstance(parity, dict):
        miou = "" if parity["miou"] is None else (f", mIoU {parity['miou']:.2f} through {metadata['target']} "
                                                  f"(PyTorch fp32 {parity['reference_miou']:.2f})")
        check = f"pixel agreement {parity['pixel_agreement']:.2%} over {parity['images']} images{miou}"
    else:
        check = parity
    console.print(f"{title}: [bold]{metadata['status']}[/] ({check}) -> [bold]{request.out}[/]")
    return metadata


_TARGET_HELP = "executorch | coreml | onnx | openvino | tensorrt (see `mixreorg-edge targets`)."


@app.command("export")
@_user_errors
def export_cmd(
    model: Path = typer.Option(..., "--model", help="Student (or teacher) run directory."),
    target: str = typer.Option(..., "--target", help=_TARGET_HELP),
    out: Path = typer.Option(..., "--out", help="Artifact folder to create (model file + metadata.json)."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="fp32 | fp16 | bf16 | int8 (default: the target's; int8 needs --calib)."),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="int8: training images (shards or an image folder), never the reported split."),
    num_samples: int = typer.Option(128, "--num-samples", help="int8: calibration images used."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Input size in pixels (default: the model's evaluation "
                                                             "size, 64 for toy students; fixed shape)."),
    output: str = typer.Option("labels", "--output", help="labels | scores | embeddings (vocabulary swap in the app)."),
    vocab: Optional[Path] = typer.Option(
        None, "--vocab", help="Vocabulary file from `vocab build` (default: the --data split's label set)."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Labelled validation folder for the parity check (default: the val folder beside the "
                             "run's training data)."),
    label_set: str = typer.Option("objects", "--label-set", help="Label set of --data."),
    parity_images: Optional[int] = typer.Option(None, "--parity-images", help="Parity on the first N images (default: all)."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="Pixel agreement with PyTorch below which the export fails (default: 0.995 for "
                                      "fp32, 0.97 for fp16 and int8)."),
) -> None:
    """Export a run to one runtime: the model file, metadata.json an app can follow alone, and a parity check
    against PyTorch on validation images (Core ML on Linux: a structural check)."""
    check_output_folder(out, "--out")
    from .export.artifact import ExportRequest

    _export(ExportRequest(run=model, target=target, out=out, precision=precision, output=output, imgsz=imgsz,
                          calib=calib, num_samples=num_samples, vocab=vocab, data=data, label_set=label_set,
                          parity_images=parity_images, min_agreement=min_agreement),
            f"{target} {precision or 'default precision'}")


@app.command("quantize")
@_user_errors
def quantize_cmd(
    model: Path = typer.Option(..., "--model", help="Student (or teacher) run directory."),
    calib: Path = typer.Option(..., "--calib", help="Training images (shards or an image folder), never the reported split."),
    out: Path = typer.Option(..., "--out", help="Folder of the int8 artifact to create."),
    num_samples: int = typer.Option(128, "--num-samples", help="Calibration images used."),
    backend: str = typer.Option("executorch", "--backend", help=_TARGET_HELP),
    max_drop: Optional[float] = typer.Option(
        None, "--max-drop", help="onnx / openvino: NNCF accuracy control, at most D mIoU points lost on --data."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Labelled folder for mIoU before and after (and --max-drop); default: the val folder "
                             "beside the run's training data."),
    label_set: str = typer.Option("objects", "--label-set", help="Label set of --data."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Input size in pixels (default: the model's)."),
) -> None:
    """NNCF post-training int8 for one runtime, calibrated on --calib; records mIoU before and after, the calibration
    set and the layers kept in float in the artifact's metadata.json."""
    check_output_folder(out, "--out")
    from .export.artifact import ExportRequest

    metadata = _export(ExportRequest(run=model, target=backend, out=out, precision="int8", calib=calib,
                                     num_samples=num_samples, data=data, label_set=label_set, max_drop=max_drop,
                                     imgsz=imgsz), f"{backend} int8")
    quantization = metadata["quantization"]
    if quantization.get("miou_before") is not None:
        console.print(f"mIoU before {quantization['miou_before']:.2f}, after {quantization['miou_after']:.2f}; "
                      f"{len(quantization['float_kept'])} layer groups kept in float")


@app.command("targets")
def targets_cmd() -> None:
    """The export targets: precisions (default first), outputs, and whether this host can export to and run each."""
    from .export.target import option_table

    rows = option_table()
    table = Table(title="export targets")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else str(v) for v in row.values()))
    console.print(table)


@app.command("benchmark")
@_user_errors
def benchmark_cmd(
    model: Optional[list[Path]] = typer.Option(
        None, "--model", help="Run directory (student or teacher); repeat for several. Its teacher and the paper-size "
                              "vit-s teacher (at 224 px and more) are added as PyTorch eager references."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled validation folder: mIoU through each runtime, "
                                                             "and the exports' parity check."),
    targets: str = typer.Option("all", "--targets", help="all, or a comma-separated list of: executorch, coreml, onnx, "
                                                         "openvino, tensorrt."),
    precisions: str = typer.Option("fp32,int8", "--precisions", help="Comma-separated: fp32, fp16, bf16, int8 (each target "
                                                                     "gets those it takes)."),
    imgsz: Optional[list[int]] = typer.Option(
        None, "--imgsz", help="Input size in pixels; repeat for several (default: the model's evaluation size, where "
                              "mIoU is measured; other sizes are latency only)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads of every runtime (default: torch's)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed calls per format before timing."),
    runs: int = typer.Option(30, "--runs", help="Timed rounds; each round calls every format once."),
    min_miou: Optional[float] = typer.Option(None, "--min-miou", help="Exit 1 if a passed format's mIoU is below this."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="int8 calibration images (default: the run's training "
                                                               "data)."),
    calib_images: int = typer.Option(128, "--calib-images", help="int8: calibration images used."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Where exports are kept and reused while up to "
                                                                       "date (default: RUN/artifacts)."),
    parity_images: int = typer.Option(100, "--parity-images", help="Images of --data each export's parity check uses."),
    output: str = typer.Option("labels", "--output", help="labels | scores (scores adds the cosine to PyTorch's)."),
    label_set: str = typer.Option("objects", "--label-set", help="Label set of --data."),
    teacher: bool = typer.Option(True, "--teacher/--no-teacher", help="Time a student's teacher too (PyTorch eager)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON (meta + rows)."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the report as a Markdown table."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of mIoU against latency."),
    import_file: Optional[Path] = typer.Option(
        None, "--import", help="Report timings measured elsewhere (JSON: host + rows of artifact and latencies_ms) "
                               "instead of measuring here."),
) -> None:
    """Every exported format of a run on this host: status, size, load time, peak memory (each format in a process
    of its own), latency timed round-robin across formats, and mIoU through each runtime."""
    for path, option in ((json_out, "--json"), (markdown_out, "--markdown"), (plot_out, "--plot")):
        if path is not None:
            check_output_file(path, option)
    from .bench import summary
    from .export.target import PRECISIONS, TARGET_NAMES
    from .bench.suite import BenchmarkRequest, below_min_miou, imported_report, parse_list, run_benchmark

    if import_file is not None:
        if model or data:
            raise ValueError("--import reports timings measured elsewhere; it takes no --model or --data")
        report = imported_report(import_file)
    else:
        if not model or data is None:
            raise ValueError("give --model RUN and --data VALDIR (or --import FILE)")
        request = BenchmarkRequest(
            models=list(model), data=data, targets=parse_list(targets, TARGET_NAMES, "--targets"),
            precisions=parse_list(precisions, PRECISIONS, "--precisions"), sizes=list(imgsz) if imgsz else None,
            threads=threads, warmup=warmup, runs=runs, calib=calib, calib_images=calib_images, artifacts=artifacts,
            parity_images=parity_images, output=output, label_set=label_set, teacher_rows=teacher)
        report = run_benchmark(request, console)
    summary.print_report(report, console)
    for path in summary.write_report(report, json_out, markdown_out, plot_out):
        console.print(f"wrote [bold]{path}[/]")
    if min_miou is not None:
        failing = below_min_miou(report["rows"], min_miou)
        if failing:
            err_console.print(f"[bold red]below --min-miou {min_miou}:[/] " + "; ".join(failing))
            raise typer.Exit(code=1)


@app.command("demo")
@_user_errors
def demo_cmd(
    artifact: Path = typer.Option(..., "--artifact", help="An ONNX artifact folder (model.onnx + metadata.json)."),
    port: int = typer.Option(8765, "--port", help="Port on localhost (0: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    web: Optional[Path] = typer.Option(None, "--web", help="The page's folder (default: web/ of this checkout)."),
) -> None:
    """Serve the browser demo (web/, onnxruntime-web) and one ONNX artifact; open the printed address."""
    from .demo import address, artifact_problems, find_web_dir, make_server

    if not artifact.is_dir():
        raise FileNotFoundError(f"--artifact {artifact}: no such folder")
    web = find_web_dir(web)
    problems = artifact_problems(artifact)
    for problem in problems:
        err_console.print(f"[bold red]problem:[/] {problem}")
    try:
        server = make_server(artifact, web, host, port)
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror or error}): pass another --port") from None
    note = " (it will show the problem above)" if problems else ""
    console.print(f"demo of {artifact.resolve()}: open [bold]{address(server)}[/]{note}; Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()


@app.command("quickstart")
@_user_errors
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where everything goes."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Teacher training minutes (with --from-scratch)."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train the toy teacher instead of the shipped one."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic world and of training."),
    distill_steps: Optional[int] = typer.Option(
        None, "--distill-steps", help="Distillation steps of the MobileViT student (default: 1200, a few minutes on 2 cores)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue a quickstart in --out that stopped: completed stages "
                                                        "are reused, distillation resumes from its checkpoint."),
) -> None:
    """Synthetic data -> toy teacher -> zero-shot evaluation -> MobileViT-XXS student -> NNCF int8 -> export to every
    runtime this host can run -> benchmark table, with a summary.json of every artifact, report and figure."""
    check_output_folder(out, "--out")
    from .pipeline import quickstart

    budget = {} if distill_steps is None else {"distill_steps": distill_steps}  # None: the quickstart's default
    summary = quickstart(out, minutes=minutes, from_scratch=from_scratch, seed=seed, console=console, resume=resume,
                         **budget)
    table = Table(title="quickstart")
    table.add_column("item")
    table.add_column("value")
    for key, value in summary.items():
        if key == "stage_seconds":
            value = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in value.items())
        if key != "exports":
            table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    student, teacher = summary["student_run"], summary["teacher_run"]
    onnx = next((row["path"] for row in summary["exports"] if row["target"] == "onnx" and row["path"]), None)
    steps = [f"[bold]look[/]: {summary['overlay']} (teacher and student on a validation image)"]
    if "benchmark_json" in summary:
        steps.append(f"[bold]benchmark[/]: {summary['benchmark_markdown']} (table), {summary['benchmark_plot']} "
                     f"(mIoU against latency), {summary['benchmark_json']}")
        steps.append(f"[bold]at photo size[/]: mixreorg-edge benchmark --model {student} --data {summary['val_dir']} "
                     f"--artifacts {Path(summary['benchmark_json']).parent / 'exports'} --imgsz 448")
    steps += [f"[bold]segment your image[/]: mixreorg-edge segment --model {student} --image YOUR.jpg "
              f"--classes synthetic-objects --out seg.png",
              f"[bold]export[/]: mixreorg-edge export --model {student} --target coreml --out my-coreml "
              f"(see `mixreorg-edge targets`)"]
    if onnx:
        steps.append(f"[bold]an artifact[/]: {onnx} (model.onnx + metadata.json, what an app needs)")
    steps.append(f"[bold]disk[/]: {summary['disk_mb']:.0f} MB in {summary['teacher_run'].rsplit('/', 1)[0]}, of which "
                 f"{summary['target_cache_mb']:.0f} MB is the distillation target cache ({summary['target_cache']}; "
                 f"delete it when you distil no more from {teacher})")
    console.print(Panel("\n".join(steps), title="next", expand=False))


def _print_scores(scores: dict) -> None:
    table = Table(title=f"{scores['label_set']}: mIoU {scores['miou']:.2f} over {scores['num_images']} images")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in scores["per_class_iou"].items():
        table.add_row(name, "-" if iou is None else f"{iou:.2f}")
    console.print(table)
    console.print(f"pixel accuracy {scores['pixel_accuracy']:.2f}  mean accuracy {scores['mean_accuracy']:.2f}")


def main() -> None:
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 alone speaks
        console.quiet = err_console.quiet = True
    app()


if __name__ == "__main__":
    main()
