"""The metrics log and its TensorBoard twin (an optional dependency, refused with one clear line when missing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mixreorg_edge.run_log import TENSORBOARD_DIR, RunLog, check_tensorboard


def test_rows_go_to_the_jsonl_log_and_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLog(tmp_path / "metrics.jsonl", append=False, tensorboard=True) as log:
        for step, loss in ((10, 2.5), (20, 1.5)):
            log.write({"step": step, "loss": loss, "images_per_s": 100, "targets_reused": True})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["loss"] for row in rows] == [2.5, 1.5]
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["images_per_s", "loss"]
    assert [(event.step, event.value) for event in events.Scalars("loss")] == [(10, 2.5), (20, 1.5)]


def test_tensorboard_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tiny_world: Path,
                                                tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an install without it gives
    with pytest.raises(ValueError, match="pip install tensorboard"):
        check_tensorboard()
    result = CliRunner().invoke(app, ["train-teacher", "--data", str(tiny_world), "--out", str(tmp_path / "run"),
                                      "--steps", "2", "--tensorboard"])
    assert result.exit_code == 2 and "pip install tensorboard" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()  # refused before anything was written
