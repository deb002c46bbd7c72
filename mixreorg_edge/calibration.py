"""Background calibration: the log-prior on the background class (`Vocabulary.background_bias`) that gives the best
mIoU on a labelled *tuning* split, recorded with the model in RUN/calibration.json.

GroupViT tunes its background threshold per dataset; here the equivalent is one number per model and label set,
tuned on a split the reported scores never come from (`evaluate_run` refuses to use a calibration on the split it
was tuned on). Training never sees it: it only moves the boundary between the background words and the classes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .data.segfolder import SegmentationDataset
from .runs import write_json_atomic
from .vocab import Vocabulary
from .zeroshot import ZeroShotProtocol, evaluate_settings, protocol_record

CALIBRATION_FILE = "calibration.json"
ENTRY_KEYS = {"label_set", "classes", "background_words", "background_bias", "tune_data", "tune_miou"}
BIAS_GRID: tuple[float, ...] = tuple(-10.0 + 0.5 * step for step in range(51))  # -10 .. 15 logits, 0 included


def calibrate_background_bias(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    protocol: ZeroShotProtocol,
    templates: str = "ensemble",
    text_model: torch.nn.Module | None = None,
    grid: tuple[float, ...] = BIAS_GRID,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Sweep the background bias over `grid` on a labelled tuning split (one forward pass per image) and return the
    calibration entry: the bias with the best mIoU (ties: the smallest magnitude), that mIoU, the mIoU at bias 0,
    the whole curve, and what it was tuned on. With a mask refinement in `protocol`, the entry's `unrefined` holds
    the same for the unrefined logits (what a deployed graph without the refinement needs)."""
    if not dataset.background_words:
        raise ValueError(f"label set {dataset.label_set!r} has no background words: there is no background to calibrate")
    if 0.0 not in grid:
        raise ValueError("the bias grid must contain 0 (the uncalibrated rule)")
    variants = (True, False) if protocol.refinement.enabled else (True,)
    scores = evaluate_settings(model, dataset, protocol, [(bias, refined) for refined in variants for bias in grid],
                               templates, show_progress=show_progress, text_model=text_model,
                               description="calibrate")
    sweeps = {refined: _best_of([(bias, scores[(bias, refined)]["miou"]) for bias in grid]) for refined in variants}
    entry = {
        "label_set": dataset.label_set,
        "classes": dataset.classes,
        "background_words": dataset.background_words,
        **sweeps[True],
        "tune_data": str(dataset.root.resolve()),
        "num_images": len(dataset),
        "templates": templates,
        "protocol": protocol_record(protocol),
    }
    if False in sweeps:
        entry["unrefined"] = sweeps[False]
    return entry


def _best_of(curve: list[tuple[float, float]]) -> dict[str, Any]:
    best_bias, best_miou = max(curve, key=lambda point: (point[1], -abs(point[0])))
    return {"background_bias": best_bias, "tune_miou": best_miou, "uncalibrated_tune_miou": dict(curve)[0.0],
            "curve": [[bias, miou] for bias, miou in curve]}


def entry_bias(entry: dict[str, Any], refinement_iterations: int) -> float:
    """The bias an entry holds for logits refined with `refinement_iterations` (0: unrefined). An entry tuned under
    another refinement, without an unrefined sweep for unrefined logits, is refused."""
    tuned_with = entry.get("protocol", {}).get("refine_iterations", 0)  # entries from before refinement: none
    if refinement_iterations == tuned_with:
        return float(entry["background_bias"])
    if refinement_iterations == 0 and "unrefined" in entry:
        return float(entry["unrefined"]["background_bias"])
    raise ValueError(
        f"the {entry['label_set']!r} calibration was tuned with {tuned_with} mask refinement iterations, not "
        f"{refinement_iterations}: run `mixreorg-edge calibrate` again, or pass --background-bias"
    )


def read_calibrations(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of a calibration file by label set ({} when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise ValueError("expected an object of label set -> calibration entry")
        for label_set, entry in entries.items():
            missing = sorted(ENTRY_KEYS - set(entry))
            if missing:
                raise ValueError(f"the {label_set!r} entry lacks {', '.join(missing)}")
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not a calibration file ({err})") from err
    return entries


def write_calibration(path: Path, entry: dict[str, Any]) -> dict[str, Any] | None:
    """Add (or replace) the entry for `entry['label_set']` in the calibration file at `path`, atomically; returns the
    entry it replaced, if any."""
    entries = read_calibrations(path)
    replaced = entries.get(entry["label_set"])
    entries[entry["label_set"]] = entry
    write_json_atomic(path, entries)
    return replaced


def matching_calibration(path: Path, classes: list[str], background_words: list[str]) -> dict[str, Any] | None:
    """The entry of the calibration file at `path` tuned for exactly these classes and background words, if any."""
    for entry in read_calibrations(path).values():
        if entry.get("classes") == classes and entry.get("background_words") == background_words:
            return entry
    return None


def calibration_file(run: Path) -> Path:
    """Where a run's calibrations live: RUN/calibration.json (next to the weights when a file is given)."""
    run = Path(run)
    return (run.parent if run.suffix == ".safetensors" else run) / CALIBRATION_FILE


def calibrated_background_bias(
    run: Path, dataset: SegmentationDataset, protocol: ZeroShotProtocol, calibration: Path | None = None
) -> tuple[float, float, dict[str, Any] | None]:
    """The background biases calibrated for `dataset`'s classes and background words in `calibration` (default: the
    run's calibration file) for `protocol` and for its unrefined logits, and where they came from; (0.0, 0.0, None)
    when there is none. A calibration tuned on `dataset` itself is refused: scores on the tuning split are not
    evaluation scores."""
    path = calibration or calibration_file(run)
    if calibration is not None and not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    entry = matching_calibration(path, dataset.classes, dataset.background_words)
    if entry is None:
        if calibration is not None:
            raise ValueError(f"{path} has no calibration for the classes of {dataset.root} ({dataset.label_set})")
        return 0.0, 0.0, None
    if Path(entry["tune_data"]) == dataset.root.resolve():
        raise ValueError(
            f"{path} was tuned on {dataset.root}, the split being evaluated; calibrate on another labelled split "
            "(e.g. `mixreorg-edge data synth --train 0 --seed 1`) or pass --background-bias"
        )
    bias = entry_bias(entry, protocol.refinement.iterations)
    unrefined_bias = entry_bias(entry, 0) if protocol.refinement.enabled else bias
    source = {"file": str(path), "tune_data": entry["tune_data"], "tune_miou": entry["tune_miou"]}
    return bias, unrefined_bias, source


def with_run_calibration(run: Path, vocabulary: Vocabulary, refinement_iterations: int) -> Vocabulary:
    """`vocabulary` with the background bias the run was calibrated with for exactly its classes and background words
    and logits refined with `refinement_iterations` (unchanged when there is none): what `segment --classes` (the
    run's refinement) and `vocab build` (unrefined, as a deployed graph computes them) use, so a vocabulary keeps the
    model's calibration."""
    if not vocabulary.background_words:
        return vocabulary
    entry = matching_calibration(calibration_file(run), vocabulary.label_set, vocabulary.background_words)
    if entry is None:
        return vocabulary
    return replace(vocabulary, background_bias=entry_bias(entry, refinement_iterations))
