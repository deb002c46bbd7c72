import json
import sys
from pathlib import Path

import pytest

from conftest import tiny_teacher_config, tiny_train_config
from mixreorg_edge.runs import METRICS_FILE, MODEL_FILE, STATE_FILE, load_model
from mixreorg_edge.teacher.train import train_teacher


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows]


def test_resumed_run_reproduces_the_uninterrupted_loss_curve(tiny_world: Path, tmp_path: Path) -> None:
    data = tiny_world / "train"
    straight = train_teacher(data, tmp_path / "a", tiny_teacher_config(), tiny_train_config(), show_progress=False)
    train_teacher(data, tmp_path / "b", tiny_teacher_config(), tiny_train_config(), show_progress=False, stop_after=3)
    assert _losses(tmp_path / "b")[-1][0] == 3
    resumed = train_teacher(data, tmp_path / "b", tiny_teacher_config(), tiny_train_config(), resume=True,
                            show_progress=False)
    assert straight.steps == resumed.steps == 6
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    model, config = load_model(tmp_path / "b")
    assert config["step"] == 6 and config["kind"] == "teacher"


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tiny_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=1), show_progress=False)
    assert (run / STATE_FILE).is_file() and (run / MODEL_FILE).is_file()
    with pytest.raises(FileExistsError, match="--resume"):
        train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(), show_progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_teacher(tiny_world / "train", tmp_path / "new", tiny_teacher_config(), tiny_train_config(),
                      resume=True, show_progress=False)
    assert not list(run.glob("*.tmp"))


def test_training_never_reads_masks(tiny_world: Path, tmp_path: Path) -> None:
    """Every file opened while training is recorded: none is a mask or anything of the validation split."""
    opened: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        train_teacher(tiny_world, tmp_path / "run", tiny_teacher_config(), tiny_train_config(steps=2),
                      show_progress=False)
    finally:
        active[0] = False
    data_files = [path for path in opened if str(tiny_world) in path]
    assert any(path.endswith(".tar") for path in data_files)
    assert not [path for path in data_files if "/val/" in path or "mask" in path or path.endswith(".png")]
