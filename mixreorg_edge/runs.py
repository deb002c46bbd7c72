"""Run directories: what a training run writes, and loading a model back from one.

    RUN/config.json              what was trained and how (kind, model config, training config, data, seed)
    RUN/model.safetensors        weights, with the model config in the safetensors metadata
    RUN/checkpoint.safetensors   full training state for --resume (weights, optimizer, RNG, step)
    RUN/metrics.jsonl            one JSON line per logged step
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import atomic_write, check_model_match, load_model_state

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a fsynced temp file renamed into place)."""
    atomic_write(path, lambda tmp_name: Path(tmp_name).write_text(text))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def model_file(run: Path) -> Path:
    """The weights file of a run directory (or the file itself when a .safetensors path is given)."""
    run = Path(run)
    path = run if run.suffix == ".safetensors" else run / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {run} (expected {path})")
    return path


def load_model(run: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a run (its kind is read from the saved config) in eval mode."""
    path = model_file(run)
    state, config = load_model_state(path)
    kind = config.get("kind")
    if kind == "teacher":
        from .teacher.config import TeacherConfig
        from .teacher.model import MixReorgTeacher

        model: nn.Module = MixReorgTeacher(TeacherConfig.from_dict(config["teacher"]))
    elif kind == "student":
        from .distill.student import DenseStudent, StudentConfig

        model = DenseStudent(StudentConfig.from_dict(config["student"]))
    else:
        raise ValueError(f"{run}: unknown model kind {kind!r} in its config")
    check_model_match(model, state, path)  # an edited or foreign file: one clear line, not a torch traceback
    model.load_state_dict(state)
    return model.eval(), config


def load_text_model(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    """The model that embeds class names for a run: a teacher itself; for a student, the teacher it was distilled
    from (its `teacher_run`), refused unless its text side is the one the student was trained against."""
    if config.get("kind") != "student":
        return model
    from .vocab import teacher_fingerprint

    teacher_run = Path(config["teacher_run"])
    try:
        teacher, _ = load_model(teacher_run)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"this student's teacher {teacher_run} is missing: it embeds class names (`segment` also takes a "
            "--vocab file that teacher built)"
        ) from None
    if teacher_fingerprint(teacher) != config["text_fingerprint"]:
        raise ValueError(
            f"{teacher_run} is not the teacher this student was distilled from (its text side differs: retrained or "
            "replaced since, e.g. by a newer shipped teacher); restore that run there, or give `segment` a --vocab "
            "file it built"
        )
    return teacher


def load_run_vocabulary(model: nn.Module, config: dict[str, Any], path: Path):
    """A vocabulary file for a run's model, refused unless its dimension and teacher (the text side a student was
    distilled against, or a teacher's own) are the model's."""
    from .vocab import load_vocabulary, teacher_fingerprint

    expected = config["text_fingerprint"] if config.get("kind") == "student" else teacher_fingerprint(model)
    return load_vocabulary(path, expected_dim=model.embed_dim, expected_teacher=expected)
