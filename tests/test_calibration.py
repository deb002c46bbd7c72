"""Background calibration: the sweep agrees with evaluation, eval applies a run's calibration, and never on the
split it was tuned on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixreorg_edge.calibration import CALIBRATION_FILE, matching_calibration, write_calibration
from mixreorg_edge.cli import app
from mixreorg_edge.pipeline import calibrate_run, evaluate_run

runner = CliRunner()


def _said(result, text: str) -> bool:
    """`text` is in the command's output (rich wraps long lines)."""
    return " ".join(text.split()) in " ".join(result.output.split())


@pytest.fixture(scope="module")
def tune_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled split of the tiny world's generator with another seed (val only)."""
    from mixreorg_edge.data.synth import write_synthetic_world

    out = tmp_path_factory.mktemp("tune")
    write_synthetic_world(out, train=0, val=6, size=32, seed=4, workers=1)
    return out / "val"


@pytest.fixture
def run(tiny_teacher_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny teacher run (calibration writes into the run directory)."""
    return Path(shutil.copytree(tiny_teacher_run, tmp_path / "run"))


def test_sweep_agrees_with_evaluation_at_the_chosen_bias(run: Path, tune_split: Path) -> None:
    entry = calibrate_run(run, tune_split, "objects")
    assert entry["file"] == str(run / CALIBRATION_FILE) and (run / CALIBRATION_FILE).is_file()
    assert entry["tune_data"] == str(tune_split.resolve()) and entry["num_images"] == 6
    curve = dict((bias, miou) for bias, miou in entry["curve"])
    assert entry["tune_miou"] == max(curve.values()) >= entry["uncalibrated_tune_miou"] == curve[0.0]
    for bias in (0.0, entry["background_bias"], 4.0):  # each point of the curve is what eval scores at that bias
        scores = evaluate_run(run, tune_split, "objects", background_bias=bias)
        assert scores["miou"] == pytest.approx(curve[bias], abs=1e-9)
        assert scores["background_bias"] == bias and scores["calibration"] == {"override": True}


def test_eval_applies_the_run_calibration_but_not_on_its_tuning_split(
    run: Path, tune_split: Path, tiny_world: Path, tmp_path: Path
) -> None:
    entry = calibrate_run(run, tune_split, "objects")
    write_calibration(run / CALIBRATION_FILE, {**entry, "background_bias": 2.0})  # the tiny model: no background at 0
    out = tmp_path / "scores.json"
    args = ("eval", "--model", str(run), "--data", str(tiny_world / "val"), "--json", str(out))
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert _said(result, "background bias 2 (calibrated on")
    scores = json.loads(out.read_text())
    assert scores["background_bias"] == 2.0 and scores["calibration"]["file"] == str(run / CALIBRATION_FILE)
    explicit = evaluate_run(run, tiny_world / "val", "objects", background_bias=2.0)
    uncalibrated = evaluate_run(run, tiny_world / "val", "objects", background_bias=0.0)["miou"]
    assert scores["miou"] == pytest.approx(explicit["miou"]) and explicit["miou"] != pytest.approx(uncalibrated)
    assert scores["miou_uncalibrated"] == pytest.approx(uncalibrated)  # from the same forward pass
    assert _said(result, f"mIoU at background bias 0 (uncalibrated): {uncalibrated:.2f}")
    result = runner.invoke(app, ["eval", "--model", str(run), "--data", str(tune_split)])
    assert result.exit_code == 2 and _said(result, "the split being evaluated")
    result = runner.invoke(app, ["eval", "--model", str(run), "--data", str(tune_split), "--background-bias", "0"])
    assert result.exit_code == 0, result.output


def test_uncalibrated_runs_say_so_and_entries_match_their_classes_only(run: Path, tune_split: Path,
                                                                        tiny_world: Path) -> None:
    result = runner.invoke(app, ["eval", "--model", str(run), "--data", str(tiny_world / "val")])
    assert result.exit_code == 0 and _said(result, "background bias 0 (uncalibrated")
    entry = calibrate_run(run, tune_split, "objects")
    path = run / CALIBRATION_FILE
    assert matching_calibration(path, entry["classes"], entry["background_words"])["background_bias"] == entry[
        "background_bias"]
    assert matching_calibration(path, entry["classes"], entry["background_words"][:-1]) is None
    assert matching_calibration(path, entry["classes"][::-1], entry["background_words"]) is None


def test_bad_calibration_requests_are_clear_errors(run: Path, tune_split: Path, tiny_world: Path,
                                                   tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", "--model", str(run), "--data", str(tune_split), "--label-set", "context"])
    assert result.exit_code == 2 and _said(result, "no background words")
    base = ["eval", "--model", str(run), "--data", str(tiny_world / "val")]
    result = runner.invoke(app, [*base, "--calibration", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and _said(result, "calibration file not found")
    other = tmp_path / "other.json"
    write_calibration(other, {**calibrate_run(run, tune_split, "objects"), "classes": ["background", "x"]})
    result = runner.invoke(app, [*base, "--calibration", str(other)])
    assert result.exit_code == 2 and _said(result, "has no calibration for the classes")
    other.write_text(json.dumps({"objects": {"classes": ["background", "x"], "background_words": ["y"]}}))
    result = runner.invoke(app, [*base, "--calibration", str(other)])
    assert result.exit_code == 2 and _said(result, "the 'objects' entry lacks background_bias, label_set")
    other.write_text("[1, 2]")
    result = runner.invoke(app, [*base, "--calibration", str(other)])
    assert result.exit_code == 2 and _said(result, "not a calibration file")
    result = runner.invoke(app, [*base, "--label-set", "context", "--background-bias", "1"])
    assert result.exit_code == 2 and _said(result, "needs background words")


def test_vocab_build_and_segment_keep_the_run_calibration(run: Path, tune_split: Path, tmp_path: Path) -> None:
    from mixreorg_edge.segment import run_vocabulary
    from mixreorg_edge.vocab import load_vocabulary

    entry = calibrate_run(run, tune_split, "objects")
    write_calibration(run / CALIBRATION_FILE, {**entry, "background_bias": -2.0})
    vocab = tmp_path / "vocab.safetensors"
    build = ["vocab", "build", "--teacher", str(run), "--classes", "synthetic-objects", "--out", str(vocab)]
    result = runner.invoke(app, build)
    assert result.exit_code == 0, result.output
    assert load_vocabulary(vocab).background_bias == -2.0
    assert runner.invoke(app, [*build, "--background-bias", "1.5"]).exit_code == 0
    assert load_vocabulary(vocab).background_bias == 1.5
    result = runner.invoke(app, [*build[:5], "a,b", *build[6:], "--background-bias", "1"])
    assert result.exit_code == 2 and _said(result, "needs background words")
    assert run_vocabulary(run, "synthetic-objects", None)[2].background_bias == -2.0
    assert run_vocabulary(run, "a,b", None)[2].background_bias == 0.0


@pytest.mark.parametrize("threshold, background_everywhere", [(1.0, True), (1e-6, False)])
def test_a_dataset_without_background_words_uses_its_background_threshold(
    run: Path, tune_split: Path, tmp_path: Path, threshold: float, background_everywhere: bool
) -> None:
    """GroupViT's rule from classes.json: background where no class reaches the threshold, capped at the image's
    best score (1.0: every pixel but each image's best-scoring ones)."""
    split = Path(shutil.copytree(tune_split, tmp_path / "split"))
    spec = json.loads((split / "classes.json").read_text())
    spec["background_words"] = {}
    spec["background_threshold"] = {"objects": threshold}
    (split / "classes.json").write_text(json.dumps(spec))
    scores = evaluate_run(run, split, "objects", background_bias=0.0)
    iou = scores["per_class_iou"]
    foreground = [value for name, value in iou.items() if name != "background" and value is not None]
    if background_everywhere:  # one foreground class at most per image (of 6)
        assert iou["background"] > 0.0 and sum(value > 0.0 for value in foreground) <= 6
    else:  # background never wins
        assert iou["background"] == 0.0


def test_a_refined_calibration_keeps_the_unrefined_bias_apart(
    run: Path, tune_split: Path, tiny_world: Path, tmp_path: Path
) -> None:
    from mixreorg_edge.vocab import load_vocabulary

    plain = calibrate_run(run, tune_split, "objects", refine_iterations=0, out=tmp_path / "plain.json")
    assert "unrefined" not in plain and plain["protocol"]["refine_iterations"] == 0
    refined = calibrate_run(run, tune_split, "objects", refine_iterations=3)
    assert refined["protocol"]["refine_iterations"] == 3
    assert refined["unrefined"]["curve"] == plain["curve"]  # the same sweep, scored without the refinement
    unrefined = {**refined["unrefined"], "background_bias": -1.0}
    write_calibration(run / CALIBRATION_FILE, {**refined, "background_bias": -2.0, "unrefined": unrefined})
    val = tiny_world / "val"
    scores = evaluate_run(run, val, "objects", refine_iterations=3)
    assert scores["background_bias"] == -2.0 and scores["background_bias_unrefined"] == -1.0
    expected = evaluate_run(run, val, "objects", refine_iterations=0, background_bias=-1.0)["miou"]
    assert scores["miou_unrefined"] == pytest.approx(expected, abs=1e-9)
    assert evaluate_run(run, val, "objects", refine_iterations=0)["background_bias"] == -1.0
    result = runner.invoke(app, ["eval", "--model", str(run), "--data", str(val), "--refine-iterations", "5"])
    assert result.exit_code == 2 and _said(result, "was tuned with 3 mask refinement iterations, not 5")
    vocab = tmp_path / "vocab.safetensors"  # for a deployed graph, which does not refine
    build = ["vocab", "build", "--teacher", str(run), "--classes", "synthetic-objects", "--out", str(vocab)]
    assert runner.invoke(app, build).exit_code == 0
    assert load_vocabulary(vocab).background_bias == -1.0


def test_calibrate_says_when_it_replaces_a_calibration(run: Path, tune_split: Path) -> None:
    """A second `calibrate` silently replaced the first one's entry."""
    args = ["calibrate", "--model", str(run), "--data", str(tune_split)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "replaced" not in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and _said(second, f"replaced the objects calibration tuned on {tune_split.resolve()}")
