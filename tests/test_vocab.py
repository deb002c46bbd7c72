"""Vocabularies: teacher fingerprints, save/load with refusals, built-in label sets, class specs, prompt ensembling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import tiny_teacher_config
from mixreorg_edge.checkpoint import save_model
from mixreorg_edge.data.synth import LABEL_SETS, STUFF
from mixreorg_edge.runs import load_model
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.vocab import (
    BUILTIN_LABEL_SETS,
    TEMPLATES,
    LabelSet,
    build_vocabulary,
    builtin_label_set,
    load_vocabulary,
    parse_classes,
    save_vocabulary,
    teacher_fingerprint,
    vocabulary_for,
)


def tiny_teacher(seed: int) -> MixReorgTeacher:
    torch.manual_seed(seed)
    return MixReorgTeacher(tiny_teacher_config()).eval()


@pytest.fixture(scope="module")
def teacher() -> MixReorgTeacher:
    return tiny_teacher(0)


# --- teacher fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint_follows_the_text_space_only(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    other = tiny_teacher(1)
    assert teacher_fingerprint(teacher) != teacher_fingerprint(other)
    save_model(teacher, tmp_path / "model.safetensors", {"kind": "teacher", "teacher": teacher.cfg.to_dict()})
    first, _ = load_model(tmp_path)
    second, _ = load_model(tmp_path)
    assert teacher_fingerprint(first) == teacher_fingerprint(second) == teacher_fingerprint(teacher)
    with torch.no_grad():
        for param in [*first.image_encoder.parameters(), *first.image_proj.parameters()]:
            param.add_(1.0)
    assert teacher_fingerprint(first) == teacher_fingerprint(teacher)  # image side is not part of the text space
    with torch.no_grad():
        second.logit_scale.add_(0.1)
    assert teacher_fingerprint(second) != teacher_fingerprint(teacher)


# --- save / load -----------------------------------------------------------------------------------------------


def test_save_load_round_trip(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    vocabulary = vocabulary_for(teacher, "synthetic-objects")
    assert vocabulary.teacher == teacher_fingerprint(teacher)
    assert vocabulary.embed_dim == teacher.embed_dim
    path = tmp_path / "vocab.safetensors"
    save_vocabulary(vocabulary, path)
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.safetensors"]  # no temp file left behind
    loaded = load_vocabulary(path, expected_dim=teacher.embed_dim, expected_teacher=teacher_fingerprint(teacher))
    assert torch.equal(loaded.embeddings, vocabulary.embeddings)
    assert replace(loaded, embeddings=vocabulary.embeddings) == vocabulary
    assert loaded.background_index == 0 and loaded.background_words == list(STUFF)


def test_background_bias_round_trip_and_older_files(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    path = tmp_path / "vocab.safetensors"
    save_vocabulary(replace(vocabulary_for(teacher, "synthetic-objects"), background_bias=6.5), path)
    assert load_vocabulary(path).background_bias == 6.5
    with safe_open(str(path), framework="pt") as f:  # a file written before calibration existed: no such key
        metadata = f.metadata()
    info = json.loads(metadata["vocabulary"])
    del info["background_bias"]
    save_file(load_file(str(path)), str(path), {**metadata, "vocabulary": json.dumps(info)})
    assert load_vocabulary(path).background_bias == 0.0


def test_background_bias_needs_background_words(teacher: MixReorgTeacher) -> None:
    with pytest.raises(ValueError, match="a background bias needs background words"):
        build_vocabulary(teacher, ["background", "cat"], [], background_bias=1.0)


def test_saved_metadata_records_templates_and_teacher(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    path = tmp_path / "voc.safetensors"
    save_vocabulary(vocabulary_for(teacher, "a,b", templates="simple"), path)
    with safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["vocabulary"])
    assert info["templates"] == {"name": "simple", "prompts": list(TEMPLATES["simple"])}
    assert info["teacher"] == teacher_fingerprint(teacher) and info["embed_dim"] == teacher.embed_dim
    assert info["label_set"] == ["a", "b"] and info["format_version"] == 1


def test_refuses_wrong_dimension_and_other_teacher(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    path = tmp_path / "vocab.safetensors"
    save_vocabulary(vocabulary_for(teacher, "cat,dog"), path)
    with pytest.raises(ValueError, match=f"vocabulary has dimension {teacher.embed_dim} but the model expects 128"):
        load_vocabulary(path, expected_dim=128)
    mine, theirs = teacher_fingerprint(teacher), teacher_fingerprint(tiny_teacher(1))
    message = f"vocabulary was built by teacher {mine}, this model distils teacher {theirs}"
    with pytest.raises(ValueError, match=message):
        load_vocabulary(path, expected_teacher=theirs)


def test_refuses_files_that_are_not_vocabularies(teacher: MixReorgTeacher, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_vocabulary(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="is not a vocabulary file"):
        load_vocabulary(garbage)
    model_file = tmp_path / "model.safetensors"
    save_model(teacher, model_file, {"kind": "teacher"})
    with pytest.raises(ValueError, match="is not a vocabulary file"):
        load_vocabulary(model_file)
    truncated = tmp_path / "truncated.safetensors"
    save_file({"embeddings": torch.zeros(2, 4)}, str(truncated), metadata={"kind": "vocabulary"})
    with pytest.raises(ValueError, match="malformed vocabulary metadata"):
        load_vocabulary(truncated)


# --- built-in label sets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "first", "threshold"),
    [("voc", 21, "background", 0.95), ("context", 60, "background", 0.35),
     ("coco_object", 81, "background", 0.95), ("ade20k", 150, "wall", 0.0)],
)
def test_benchmark_label_sets(name: str, size: int, first: str, threshold: float) -> None:
    labels = builtin_label_set(name)
    assert len(labels.classes) == size and labels.classes[0] == first
    assert labels.background_threshold == threshold and labels.background_words == []
    assert parse_classes(name) == labels


def test_ade20k_has_no_background_and_synthetic_sets_follow_the_world() -> None:
    assert "background" not in builtin_label_set("ade20k").classes
    objects = builtin_label_set("synthetic-objects")
    assert objects.classes == list(LABEL_SETS["objects"]) and objects.background_words == list(STUFF)
    context = builtin_label_set("synthetic-context")
    assert context.classes == list(LABEL_SETS["context"]) and context.background_words == []
    assert set(BUILTIN_LABEL_SETS) == {"voc", "context", "coco_object", "ade20k", "synthetic-objects",
                                       "synthetic-context"}
    with pytest.raises(ValueError, match="unknown label set 'vocc'"):
        builtin_label_set("vocc")


# --- parse_classes ---------------------------------------------------------------------------------------------


def test_parse_classes_accepts_every_form(tmp_path: Path) -> None:
    assert parse_classes(" cat, dog ,car") == LabelSet(["cat", "dog", "car"])
    (tmp_path / "list.json").write_text(json.dumps(["cat", "dog"]))
    assert parse_classes(str(tmp_path / "list.json")) == LabelSet(["cat", "dog"])
    spec = {"classes": ["background", "cat"], "background_words": ["sky"], "background_threshold": 0.5}
    (tmp_path / "full.json").write_text(json.dumps(spec))
    assert parse_classes(str(tmp_path / "full.json")) == LabelSet(["background", "cat"], ["sky"], 0.5)
    (tmp_path / "names.txt").write_text("cat\n  traffic light \n\ndog\n")
    assert parse_classes(str(tmp_path / "names.txt")) == LabelSet(["cat", "traffic light", "dog"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "the class list is empty"), ("cat,,dog", "class 2 is blank"), ("cat, ", "class 2 is blank"),
     ("cat,dog,cat", "duplicate class names"), ("vocc", "unknown label set 'vocc'")],
)
def test_parse_classes_refuses_bad_lists(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_classes(spec)


def test_parse_classes_refuses_bad_files(tmp_path: Path) -> None:
    for name in ("missing.json", "missing.txt", "no/such/dir/classes"):
        with pytest.raises(FileNotFoundError):
            parse_classes(str(tmp_path / name))
    cases = {
        "empty.json": ("[]", "the class list is empty"),
        "empty.txt": ("\n \n", "the class list is empty"),
        "blank.json": ('["cat", " "]', "class 2 is blank"),
        "numbers.json": ("[1, 2]", "class 1 is a int"),
        "broken.json": ("[", "invalid JSON"),
        "typo.json": ('{"classes": ["background", "a"], "background_word": ["sky"]}', "expected keys"),
        "stray.json": ('{"classes": ["cat"], "background_words": ["sky"]}', "without a 'background' class"),
        "threshold.json": ('{"classes": ["background", "cat"], "background_threshold": 2}', r"in \[0, 1\]"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            parse_classes(str(tmp_path / name))
    (tmp_path / "classes.csv").write_text("cat,dog")
    with pytest.raises(ValueError, match="unsupported class list file"):
        parse_classes(str(tmp_path / "classes.csv"))


# --- prompt ensembling -----------------------------------------------------------------------------------------


def test_prompt_ensemble_is_normalised_mean_of_normalised_prompts(teacher: MixReorgTeacher) -> None:
    vocabulary = build_vocabulary(teacher, ["background", "cat", "traffic light"], ["sky", "grass"])
    assert vocabulary.embeddings.shape == (4, teacher.embed_dim)
    assert torch.allclose(vocabulary.embeddings.norm(dim=-1), torch.ones(4), atol=1e-5)
    with torch.no_grad():
        for row, name in enumerate(["cat", "traffic light", "sky", "grass"]):
            per_template = torch.stack([
                torch.nn.functional.normalize(teacher.encode_text(teacher.tokenize([t.format(name)]))[0], dim=-1)
                for t in TEMPLATES["ensemble"]
            ])
            expected = torch.nn.functional.normalize(per_template.mean(dim=0), dim=-1)
            assert torch.allclose(vocabulary.embeddings[row], expected, atol=1e-5)
    simple = build_vocabulary(teacher, ["cat", "dog"], templates="simple")
    assert not torch.allclose(simple.embeddings[0], vocabulary.embeddings[0])


# --- one class -------------------------------------------------------------------------------------------------


def test_one_class_stands_against_the_background_words(tmp_path: Path) -> None:
    """`--classes sun` was refused as an unknown label set; with background words one class is meaningful."""
    sun = LabelSet(["background", "sun"], list(STUFF))
    assert parse_classes("sun") == parse_classes(" sun ") == sun
    (tmp_path / "one.txt").write_text("sun\n")
    (tmp_path / "one.json").write_text('["sun"]')
    assert parse_classes(str(tmp_path / "one.txt")) == parse_classes(str(tmp_path / "one.json")) == sun
    (tmp_path / "own.json").write_text('{"classes": ["background", "sun"], "background_words": ["sky"]}')
    assert parse_classes(str(tmp_path / "own.json")) == LabelSet(["background", "sun"], ["sky"])  # kept as given
    (tmp_path / "threshold.json").write_text('{"classes": ["background", "sun"], "background_threshold": 0.9}')
    with pytest.raises(ValueError, match="a background_threshold never fires"):
        parse_classes(str(tmp_path / "threshold.json"))


@pytest.mark.parametrize(("spec", "near"), [("vocc", "voc"), ("coco", "coco_object"), ("ade", "ade20k"),
                                            ("voc2012", "voc"), ("contxt", "context")])
def test_a_bare_word_near_a_built_in_name_is_still_a_typo(spec: str, near: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown label set '{spec}' \(did you mean {near}\?\)"):
        parse_classes(spec)


def test_segment_and_vocab_build_take_one_class(tiny_teacher_run: Path, tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["vocab", "build", "--teacher", str(tiny_teacher_run), "--classes", "sun",
                                 "--out", str(tmp_path / "sun.safetensors")])
    assert result.exit_code == 0, result.output
    assert load_vocabulary(tmp_path / "sun.safetensors").label_set == ["background", "sun"]
    image = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (200, 180, 40)).save(image)
    result = runner.invoke(app, ["segment", "--model", str(tiny_teacher_run), "--image", str(image), "--classes", "sun",
                                 "--out", str(tmp_path / "seg.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "seg.png").is_file()
    result = runner.invoke(app, ["segment", "--model", str(tiny_teacher_run), "--image", str(image), "--classes", " ",
                                 "--out", str(tmp_path / "seg.png")])
    assert result.exit_code == 2 and "the class list is empty" in result.output
