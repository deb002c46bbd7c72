"""Output paths are checked before any work: an unwritable folder, a folder given for a file and a file given for a
folder are one red line and exit 2 for every verb that writes (they were tracebacks, some after all the compute)."""

import os
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixreorg_edge.cli import app

runner = CliRunner()
UNWRITABLE = Path("/sys/mixreorg-edge-test")  # sysfs refuses new files even to root (CI runs as root)

FOLDER_VERBS = [
    ["data", "synth", "--out"],
    ["train-teacher", "--data", "nowhere", "--out"],
    ["distill", "--teacher", "nowhere", "--data", "nowhere", "--out"],
    ["quickstart", "--out"],
    ["export", "--model", "nowhere", "--target", "onnx", "--out"],
    ["quantize", "--model", "nowhere", "--calib", "nowhere", "--out"],
]
FILE_VERBS = [
    ["segment", "--model", "nowhere", "--image", "nowhere.png", "--out"],
    ["vocab", "build", "--teacher", "nowhere", "--classes", "a,b", "--out"],
    ["eval", "--model", "nowhere", "--data", "nowhere", "--json"],
    ["calibrate", "--model", "nowhere", "--data", "nowhere", "--out"],
]


def _sysfs_refuses_files() -> bool:
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return False
    except OSError:
        return True


def _fails_clearly(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


@pytest.mark.skipif(not os.path.isdir("/sys") or not _sysfs_refuses_files(), reason="no read-only /sys to write into")
@pytest.mark.parametrize("verb", FOLDER_VERBS + FILE_VERBS, ids=lambda verb: " ".join(verb[:2]))
def test_an_unwritable_output_is_refused_before_any_work(verb: list[str]) -> None:
    _fails_clearly([*verb, str(UNWRITABLE / "out")], "cannot write in /sys")


@pytest.mark.parametrize("verb", FILE_VERBS, ids=lambda verb: verb[0])
def test_a_folder_given_for_an_output_file_is_refused(verb: list[str], tmp_path: Path) -> None:
    _fails_clearly([*verb, str(tmp_path)], "is a folder; give a file name")


@pytest.mark.parametrize("verb", FOLDER_VERBS, ids=lambda verb: verb[0])
def test_a_file_given_for_an_output_folder_is_refused(verb: list[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _fails_clearly([*verb, str(tmp_path / "file")], "is a file; give a folder")
