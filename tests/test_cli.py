import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixreorg_edge.cli import app
from mixreorg_edge.data.synth import DEFAULT_THING_COLOURS

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def _train_one_step(data: Path, out: Path, *extra: str):
    """`train-teacher` for one toy step of 8 images, with the extra options given."""
    return _run("train-teacher", "--data", str(data), "--preset", "toy", "--out", str(out), "--steps", "1",
                "--batch-size", "8", *extra)


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("train-teacher", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--steps", "1")
    assert result.exit_code == 2
    assert "not found" in result.output


def test_data_synth_records_thing_colours_and_refuses_unknown_ones(tmp_path: Path) -> None:
    result = _run("data", "synth", "--out", str(tmp_path / "w"), "--train", "2", "--val", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "w" / "world.json").read_text())["thing_colours"] == DEFAULT_THING_COLOURS
    result = _run("data", "synth", "--out", str(tmp_path / "f"), "--train", "2", "--val", "1", "--thing-colours", "free")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "f" / "world.json").read_text())["thing_colours"] == "free"
    result = _run("data", "synth", "--out", str(tmp_path / "x"), "--train", "1", "--val", "1", "--thing-colours", "pink")
    assert result.exit_code != 0 and "unknown thing colours 'pink'" in result.output


def test_unknown_preset_lists_the_valid_ones(tiny_world: Path, tmp_path: Path) -> None:
    result = _run("train-teacher", "--data", str(tiny_world), "--preset", "huge", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "toy" in result.output and "vit-s" in result.output


def test_empty_class_list_is_refused(tiny_world: Path, tmp_path: Path) -> None:
    val = tmp_path / "val"
    (val / "images").mkdir(parents=True)
    (val / "classes.json").write_text(json.dumps({"label_sets": {"objects": []}}))
    result = _run("eval", "--model", str(tmp_path / "missing-run"), "--data", str(val))
    assert result.exit_code == 2
    assert "no classes" in result.output


def test_corrupt_jpeg_in_a_shard_is_skipped_and_counted(tiny_world: Path, tmp_path: Path) -> None:
    from conftest import shards_with_a_corrupt_jpeg, tiny_teacher_config, tiny_train_config
    from mixreorg_edge.teacher.train import train_teacher

    shards = shards_with_a_corrupt_jpeg(tiny_world, tmp_path / "shards", "zz-corrupt.tar")
    result = train_teacher(shards, tmp_path / "run", tiny_teacher_config(), tiny_train_config(steps=10),
                           show_progress=False)
    assert result.steps == 10
    assert result.metrics["corrupt_images"] == 1
    # Interrupted after the first epoch (65 samples, 9 steps of 8) and resumed: the count survives the resume
    # (the last step does not meet the corrupt sample again).
    train_teacher(shards, tmp_path / "b", tiny_teacher_config(), tiny_train_config(steps=10), show_progress=False,
                  stop_after=9)
    resumed = train_teacher(shards, tmp_path / "b", tiny_teacher_config(), tiny_train_config(steps=None),
                            resume=True, show_progress=False)
    assert resumed.steps == 10 and resumed.metrics["corrupt_images"] == 1


def test_train_teacher_warns_about_a_truncated_shard(tiny_world: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for source in sorted((tiny_world / "train").glob("*.tar")):
        (shards / source.name).write_bytes(source.read_bytes())
    cut = sorted(shards.glob("*.tar"))[-1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 5])  # an interrupted download
    result = _train_one_step(shards, tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "1 shard(s) end early" in " ".join(result.output.split())


def test_mix_fraction_is_recorded_and_checked(tiny_world: Path, tmp_path: Path) -> None:
    result = _train_one_step(tiny_world, tmp_path / "half", "--mix-fraction", "0.5")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config["teacher"]["mixing"]["fraction"] == 0.5
    for extra, message in ((("--mix-fraction", "0"), "(0, 1]"), (("--mix-fraction", "0.5", "--variant", "baseline"),
                                                                 "does not mix")):
        result = _train_one_step(tiny_world, tmp_path / "bad", *extra)
        assert result.exit_code == 2 and message in result.output, result.output


def test_image_width_is_recorded_and_checked(tiny_world: Path, tmp_path: Path) -> None:
    result = _train_one_step(tiny_world, tmp_path / "narrow", "--image-width", "64")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "narrow" / "config.json").read_text())
    assert config["teacher"]["image"]["width"] == 64
    result = _train_one_step(tiny_world, tmp_path / "bad", "--image-width", "66")
    assert result.exit_code == 2 and "multiple of its 4 heads" in result.output, result.output
    assert not (tmp_path / "bad").exists()


def test_eval_cli_writes_the_contract_keys(tiny_world: Path, tmp_path: Path) -> None:
    from conftest import tiny_teacher_config, tiny_train_config
    from mixreorg_edge.teacher.train import train_teacher

    train_teacher(tiny_world, tmp_path / "run", tiny_teacher_config(), tiny_train_config(steps=1), show_progress=False)
    out = tmp_path / "scores.json"
    result = _run("eval", "--model", str(tmp_path / "run"), "--data", str(tiny_world / "val"),
                  "--label-set", "context", "--json", str(out))
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert {"miou", "per_class_iou", "label_set", "num_images"} <= set(scores)
    assert scores["label_set"] == "context" and scores["num_images"] == 6
    assert 0.0 <= scores["miou"] <= 100.0


def test_eval_protocol_overrides_are_used_and_checked(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    args = ("eval", "--model", str(tiny_teacher_run), "--data", str(tiny_world / "val"), "--json", str(out))
    assert _run(*args).exit_code == 0
    recorded = json.loads(out.read_text())["protocol"]
    result = _run(*args, "--short-side", "48", "--window", "24", "--stride", "12")
    assert result.exit_code == 0, result.output
    protocol = json.loads(out.read_text())["protocol"]
    assert protocol == {**recorded, "short_side": 48, "window": 24, "stride": 12} != recorded
    result = _run(*args, "--stride", "0")
    assert result.exit_code == 2 and "stride must be a positive" in result.output


def test_eval_refinement_override_reports_both_protocols(
    tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.json"
    args = ("eval", "--model", str(tiny_teacher_run), "--data", str(tiny_world / "val"), "--json", str(out))
    assert _run(*args, "--refine-iterations", "0").exit_code == 0
    plain = json.loads(out.read_text())
    assert plain["protocol"]["refine_iterations"] == 0 and "miou_unrefined" not in plain
    result = _run(*args, "--refine-iterations", "3")
    assert result.exit_code == 0, result.output
    refined = json.loads(out.read_text())
    assert refined["protocol"]["refine_iterations"] == 3
    assert refined["miou_unrefined"] == pytest.approx(plain["miou"], abs=1e-9)  # the same pass, scored unrefined
    assert "without the mask refinement" in result.output
    result = _run(*args, "--refine-iterations", "-1")
    assert result.exit_code == 2 and "refinement iterations must be 0" in result.output


@pytest.mark.parametrize("args, message", [
    (["--distill-steps", "0"], "at least 1"),
    (["--minutes", "3"], "--from-scratch"),
    (["--from-scratch", "--minutes", "0"], "positive"),
])
def test_quickstart_refuses_bad_budgets_before_any_work(args: list[str], message: str, tmp_path: Path) -> None:
    result = _run("quickstart", "--out", str(tmp_path / "qs"), *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "qs").exists()


def test_help_shows_the_actual_defaults() -> None:
    """rich treats "[...]" in help text as markup and drops it; the defaults the help states must reach the user and
    be the ones the code uses."""
    from mixreorg_edge.distill.train import DistillConfig, default_train_config
    from mixreorg_edge.pipeline import QUICKSTART_DISTILL_STEPS

    distill_help = _run("distill", "--help").output
    assert f"(default: {default_train_config().steps})" in distill_help
    assert f"(default: {DistillConfig().images})" in distill_help
    assert f"(default: {QUICKSTART_DISTILL_STEPS}," in _run("quickstart", "--help").output


def test_help_is_current_and_complete() -> None:
    """Every distill option says what it does and its default as the code has it; --variant no longer claims `full`
    is the default (the toy preset is +contextual); --version answers."""
    import re

    from mixreorg_edge.distill.train import DistillConfig, default_train_config
    from mixreorg_edge.teacher.ablation import VARIANTS

    config, train = DistillConfig(), default_train_config()
    distill_help = " ".join(_run("distill", "--help").output.split())
    for option, default in (("--batch-size", train.batch_size), ("--feature-weight", config.feature_weight),
                            ("--logit-weight", config.logit_weight), ("--temperature", config.temperature)):
        assert re.search(rf"{option} \S+ [A-Z].*?\(default: {default:g}\)", distill_help), option
    teacher_help = " ".join(_run("train-teacher", "--help").output.replace("│", " ").split())  # rich's box edges
    assert "default: full)" not in teacher_help and "toy = +contextual" in teacher_help
    assert all(name in teacher_help for name in VARIANTS)
    result = _run("--version")
    assert result.exit_code == 0 and re.fullmatch(r"mixreorg-edge \d+\.\d+\.\d+\s*", result.output)
