"""The teacher's caption vocabulary: recorded by train-teacher, shipped with the toy teacher, used for its students,
and the warning `segment`, `vocab build` and `eval` give for class names it never read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mixreorg_edge.checkpoint import save_model
from mixreorg_edge.cli import app
from mixreorg_edge.data.keywords import words
from mixreorg_edge.data.shards import ImageTextShards
from mixreorg_edge.data.synth import make_caption, render_scene
from mixreorg_edge.known_words import (
    VOCABULARY_FILE,
    caption_vocabulary,
    load_caption_vocabulary,
    record_caption_vocabulary,
    synthetic_world_vocabulary,
    unseen_class_names,
)
from mixreorg_edge.pipeline import shipped_teacher

runner = CliRunner()


def _one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture()
def teacher_without_car(tiny_teacher_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny teacher whose recorded captions never said "car"."""
    run = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_run, run)
    record = json.loads((run / VOCABULARY_FILE).read_text())
    record["words"] = [word for word in record["words"] if word != "car"]
    (run / VOCABULARY_FILE).write_text(json.dumps(record))
    return run


def test_train_teacher_records_the_words_of_its_captions(tiny_world: Path, tiny_teacher_run: Path) -> None:
    shards = ImageTextShards(tiny_world)
    expected = set()
    for index in range(len(shards)):
        expected.update(words(shards.read(index)[1]))
    assert load_caption_vocabulary(tiny_teacher_run) == expected
    assert load_caption_vocabulary(tiny_teacher_run / "model.safetensors") == expected
    assert caption_vocabulary(shards, max_captions=10)[1] == 10  # a large corpus is sampled evenly


def test_an_init_from_run_keeps_its_parents_words(tiny_world: Path, tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / VOCABULARY_FILE).write_text(json.dumps({"source": "test", "words": ["zebra"]}))
    (tmp_path / "child").mkdir()
    found = record_caption_vocabulary(tmp_path / "child", ImageTextShards(tiny_world), parent)
    assert "zebra" in found and "car" in found
    assert "parent" in json.loads((tmp_path / "child" / VOCABULARY_FILE).read_text())["source"]


def test_the_shipped_teachers_record_is_every_word_of_the_caption_generator() -> None:
    """The shipped teacher's record, the words found in its training captions, is every word the synthetic world's
    caption generator writes, and the captions the generator writes stay within it."""
    vocabulary = synthetic_world_vocabulary()
    assert load_caption_vocabulary(shipped_teacher()) == set(vocabulary)
    config = json.loads((shipped_teacher() / "config.json").read_text())
    assert set(config["keywords"]) <= set(vocabulary)  # the frequent words it did read, found in its real captions
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = render_scene(rng, size=32)
        assert set(words(make_caption(rng, scene))) <= set(vocabulary)
    assert unseen_class_names(shipped_teacher(), ["background", "sun", "person", "traffic light", "sky"]) == [
        "person", "traffic light"]


def test_a_student_uses_its_teachers_record_and_an_old_run_says_nothing(teacher_without_car: Path,
                                                                        tmp_path: Path) -> None:
    student = tmp_path / "student"
    save_model(torch.nn.Linear(2, 2), student / "model.safetensors",
               {"kind": "student", "teacher_run": str(teacher_without_car)})
    assert unseen_class_names(student, ["car", "tree"]) == ["car"]
    (teacher_without_car / VOCABULARY_FILE).unlink()  # a teacher trained before the record existed
    assert unseen_class_names(student, ["car", "tree"]) == []
    assert unseen_class_names(teacher_without_car, ["car"]) == []


def test_segment_vocab_build_and_eval_warn_about_words_the_teacher_never_read(
    teacher_without_car: Path, tiny_world: Path, tmp_path: Path
) -> None:
    """On photos "person", "cat" and the VOC classes never won, and nothing said why."""
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (90, 120, 60)).save(image)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["background", "car", "tree"], "background_words": ["sky", "grass"]}))
    commands = {
        "segment": ["segment", "--model", str(teacher_without_car), "--image", str(image), "--classes", str(classes),
                    "--out", str(tmp_path / "seg.png")],
        "vocab build": ["vocab", "build", "--teacher", str(teacher_without_car), "--classes", "car,tree",
                        "--out", str(tmp_path / "v.safetensors")],
        "eval": ["eval", "--model", str(teacher_without_car), "--data", str(tiny_world / "val")],
    }
    for verb, args in commands.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (verb, result.output)
        output = _one_line(result.output)
        assert "warning: 1 of" in output and "never occurred in the teacher's training captions (car)" in output, verb
        assert output.count("warning:") == 1, verb
    result = runner.invoke(app, [*commands["vocab build"][:5], "tree", "--out", str(tmp_path / "t.safetensors")])
    assert result.exit_code == 0 and "warning" not in result.output
