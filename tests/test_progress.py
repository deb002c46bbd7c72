"""Progress of long phases: a bar on a terminal, a few plain lines in a log, and every long phase labelled."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mixreorg_edge.cli import app
from mixreorg_edge.progress import PhaseProgress, track

runner = CliRunner()


def _run_phase(console: Console) -> str:
    with PhaseProgress("decoding", 8, console=console) as progress:
        for _ in range(8):
            progress.advance(status="ok")
    return console.file.getvalue()


def test_off_a_terminal_a_phase_is_a_few_plain_lines() -> None:
    """Evaluation bars vanished and left blank lines in a log."""
    text = _run_phase(Console(file=io.StringIO(), force_terminal=False, width=60))
    lines = text.splitlines()
    assert [line.split(" after")[0] for line in lines] == [
        "decoding: 0% (0/8)", "decoding: 25% (2/8)", "decoding: 50% (4/8)", "decoding: 75% (6/8)",
        "decoding: 100% (8/8)"]
    assert all(line.strip() for line in lines) and "\x1b" not in text


def test_on_a_terminal_the_finished_bar_stays() -> None:
    text = _run_phase(Console(file=io.StringIO(), force_terminal=True, width=100))
    assert "decoding" in text and "8/8" in text.rsplit("\r", 1)[-1]


def test_track_counts_a_sized_iterable_and_is_silent_when_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track(range(3), "items", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().out == ""
    assert list(track(range(3), "items")) == [0, 1, 2]
    assert "items: 100% (3/3)" in capsys.readouterr().out
    with pytest.raises(TypeError, match="needs a total"):
        list(track(iter([1]), "items"))


def test_data_synth_shows_its_progress(tmp_path: Path) -> None:
    """Data generation (85 s for the default world) showed nothing."""
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "w"), "--train", "10", "--val", "4",
                                 "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "synthetic world: 10 training + 4 validation images: 100% (14/14)" in result.output


def test_the_teacher_target_cache_shows_its_progress(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The target cache (~3 min for the quickstart) ran under a distillation bar sitting at 0 %."""
    from mixreorg_edge.data.shards import ImageTextShards
    from mixreorg_edge.distill.targets import teacher_targets
    from mixreorg_edge.runs import load_model

    teacher, _ = load_model(tiny_teacher_run)
    teacher_targets(teacher, ImageTextShards(tiny_world), 8, 32, "hflip", tmp_path, show_progress=True)
    out = capsys.readouterr().out
    assert "teacher targets: decoding 8 images: 100% (8/8)" in out
    assert "teacher targets: embedding 16 views: 100% (16/16)" in out


def test_eval_progress_is_readable_in_a_log(tiny_world: Path, tiny_teacher_run: Path) -> None:
    result = runner.invoke(app, ["eval", "--model", str(tiny_teacher_run), "--data", str(tiny_world / "val")])
    assert result.exit_code == 0, result.output
    assert "eval objects: 0% (0/6)" in result.output and "eval objects: 100% (6/6)" in result.output
