import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_teacher_config, tiny_train_config
from mixreorg_edge.checkpoint import save_model
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


def test_resume_after_a_crash_keeps_the_saved_budget_and_drops_rows_logged_after_the_checkpoint(
    tiny_world: Path, tmp_path: Path
) -> None:
    """A crash between checkpoints leaves metric rows the resumed run logs again; `--resume` without a budget
    continues the saved one (a default budget given here would change the schedule and the curve)."""
    data = tiny_world / "train"
    train_teacher(data, tmp_path / "a", tiny_teacher_config(), tiny_train_config(), show_progress=False)
    run = tmp_path / "b"
    train_teacher(data, run, tiny_teacher_config(), tiny_train_config(), show_progress=False, stop_after=3)
    with (run / METRICS_FILE).open("a") as log:  # what steps 4 and 5 logged before the crash
        log.writelines(json.dumps({"step": step, "loss": -1.0}) + "\n" for step in (4, 5))
        log.write('{"step": 6, "lo')  # cut by the crash
    resumed = train_teacher(data, run, tiny_teacher_config(), tiny_train_config(steps=None), resume=True,
                            show_progress=False)
    assert resumed.steps == 6 and _losses(run) == _losses(tmp_path / "a")
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 6


def test_resume_with_a_new_budget_extends_the_run_and_records_it(tiny_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=3), show_progress=False)
    resumed = train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=5),
                            resume=True, show_progress=False)
    assert resumed.steps == 5 and [step for step, _ in _losses(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 5
    assert load_model(run)[1]["train"]["steps"] == 5


def test_resume_with_fewer_steps_than_saved_is_refused_and_changes_nothing(tiny_world: Path, tmp_path: Path) -> None:
    """--resume --steps N at or below the saved step used to exit 0 with "final loss nan" and rewrite config.json."""
    run = tmp_path / "run"
    train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=3), show_progress=False)
    config = (run / "config.json").read_text()
    for steps in (2, 3):
        with pytest.raises(ValueError, match="already at step 3"):
            train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=steps),
                          resume=True, show_progress=False)
    assert (run / "config.json").read_text() == config
    (run / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        train_teacher(tiny_world / "train", run, tiny_teacher_config(), tiny_train_config(steps=5), resume=True,
                      show_progress=False)


@pytest.mark.parametrize("overrides", [{"steps": 0}, {"steps": None, "minutes": 0.0}, {"steps": None},
                                       {"minutes": 1.0}, {"save_every": 0}, {"log_every": 0}, {"batch_size": 0}])
def test_bad_budgets_and_intervals_are_refused_before_the_run_is_created(
    overrides: dict, tiny_world: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="steps or minutes|positive|at least 1"):
        train_teacher(tiny_world / "train", tmp_path / "run", tiny_teacher_config(), tiny_train_config(**overrides),
                      show_progress=False)
    assert not (tmp_path / "run").exists()


def test_a_batch_that_does_not_split_into_mixing_groups_is_refused_before_the_run(
    tiny_world: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not divisible"):  # the tiny config mixes 2 images
        train_teacher(tiny_world / "train", tmp_path / "run", tiny_teacher_config(), tiny_train_config(batch_size=7),
                      show_progress=False)
    assert not (tmp_path / "run").exists()


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


def test_init_from_continues_a_teacher_with_its_architecture_keywords_and_weights(
    tiny_world: Path, tmp_path: Path
) -> None:
    """With a zero learning rate the child's weights are exactly the parent's; its own `teacher_cfg` is ignored."""
    from safetensors.torch import load_file

    parent_architecture = tiny_teacher_config()
    parent_architecture.keyword_prompts = 4
    parent = tmp_path / "parent"
    train_teacher(tiny_world / "train", parent, parent_architecture, tiny_train_config(steps=2), show_progress=False)
    other_architecture = tiny_teacher_config(enabled=False)
    child = tmp_path / "child"
    train_teacher(tiny_world / "train", child, other_architecture, tiny_train_config(steps=1, lr=0.0),
                  init_from=parent, show_progress=False)
    parent_config = json.loads((parent / "config.json").read_text())
    child_config = json.loads((child / "config.json").read_text())
    assert child_config["teacher"] == parent_config["teacher"]
    assert child_config["keywords"] == parent_config["keywords"] and len(child_config["keywords"]) > 0
    assert child_config["init_from"]["run"] == str(parent)
    assert child_config["init_from"]["provenance"] == parent_config["provenance"]
    parent_weights, child_weights = load_file(parent / MODEL_FILE), load_file(child / MODEL_FILE)
    assert parent_weights.keys() == child_weights.keys()
    assert all(torch.equal(parent_weights[name], child_weights[name]) for name in parent_weights)


def test_init_from_refuses_a_student_and_a_second_initialisation(
    tiny_teacher_run: Path, tiny_world: Path, tmp_path: Path
) -> None:
    student = tmp_path / "student"
    student.mkdir()
    save_model(torch.nn.Linear(2, 2), student / MODEL_FILE, {"kind": "student"})
    with pytest.raises(ValueError, match="expected a teacher run"):
        train_teacher(tiny_world / "train", tmp_path / "a", tiny_teacher_config(), tiny_train_config(steps=1),
                      init_from=student, show_progress=False)
    with pytest.raises(ValueError, match="not both"):
        train_teacher(tiny_world / "train", tmp_path / "b", tiny_teacher_config(), tiny_train_config(steps=1),
                      init_from=tiny_teacher_run, init_image=tiny_teacher_run / MODEL_FILE, show_progress=False)


def test_a_model_file_that_does_not_fit_its_config_is_a_clear_error(tiny_teacher_run: Path, tmp_path: Path) -> None:
    model, config = load_model(tiny_teacher_run)
    edited = json.loads(json.dumps(config))
    edited["teacher"]["embed_dim"] += 8  # the weights no longer fit the architecture the config describes
    (tmp_path / "run").mkdir()
    save_model(model, tmp_path / "run" / MODEL_FILE, edited)
    with pytest.raises(ValueError, match="does not match the model"):
        load_model(tmp_path / "run")


_LINEAR_RUN = """
import json, signal, sys
from pathlib import Path
import torch
from mixreorg_edge.training import TrainConfig, TrainingInterrupted, prepare_run, run_training

out, steps, signal_at, resume = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "resume"
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
cfg = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=1, steps=steps, save_every=100, log_every=1, seed=0)
config = prepare_run(out, {"kind": "test"}, cfg, resume)

def step_fn(step):
    if step == signal_at:
        signal.raise_signal(signal.SIGTERM)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(step)) + torch.randn(4)
    return {"loss": (model(x) - 1).pow(2).mean()}

try:
    run_training(out, model, cfg, config, step_fn, resume=resume, show_progress=False)
    print(json.dumps(None))
except TrainingInterrupted as stop:
    print(json.dumps({"message": str(stop), "exit_code": stop.exit_code, "step": stop.step}))
"""


def _linear_run(out: Path, steps: int, signal_at: int = -1, resume: bool = False) -> dict | None:
    """A tiny run through the shared training engine, in a fresh interpreter; SIGTERM is sent to that process inside
    step `signal_at`. Returns how it was interrupted (None: it finished). A fresh process because raising SIGTERM in
    the pytest process crashed it (SIGSEGV, no Python traceback) once the whole suite had run before, never alone."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LINEAR_RUN, str(out), str(steps), str(signal_at),
                           "resume" if resume else "new"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sigterm_saves_after_the_step_in_hand_and_resume_continues_exactly(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM used to end training silently, losing everything since the last --save-every checkpoint."""
    assert _linear_run(tmp_path / "whole", steps=8) is None
    stopped = _linear_run(tmp_path / "cut", steps=8, signal_at=3)
    assert stopped is not None and "saved at step 4; rerun with --resume" in stopped["message"]
    assert stopped["exit_code"] == 143 and stopped["step"] == 4
    from mixreorg_edge.checkpoint import load_model_state

    assert load_model_state(tmp_path / "cut" / MODEL_FILE)[1]["step"] == 4  # saved at once, though save_every is 100
    assert _linear_run(tmp_path / "cut", steps=8, resume=True) is None
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "whole")


def test_the_cli_says_where_an_interrupted_run_was_saved(tiny_world: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app
    from mixreorg_edge.teacher import train as teacher_train
    from mixreorg_edge.training import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(tmp_path / "run", 7, "SIGINT")

    monkeypatch.setattr(teacher_train, "train_teacher", interrupted)
    result = CliRunner().invoke(app, ["train-teacher", "--data", str(tiny_world), "--out", str(tmp_path / "run"),
                                      "--steps", "10"])
    assert result.exit_code == 130
    assert "saved at step 7; rerun the command with --resume" in " ".join(result.output.split())
