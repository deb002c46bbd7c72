"""Folder segmentation dataset layout and errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixreorg_edge.data.segfolder import SegmentationFolder

CLASSES = {
    "label_sets": {"objects": ["background", "cat", "dog"], "context": ["sky", "grass", "road"], "empty": []},
    "background_words": {"objects": ["sky", "wall"]},
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for label_set in ("objects", "context"):
        (tmp_path / "masks" / label_set).mkdir(parents=True)
    for i, suffix in enumerate((".jpg", ".png")):
        key = f"img{i}"
        Image.new("RGB", (8, 6), (i * 50, 0, 0)).save(tmp_path / "images" / f"{key}{suffix}")
        mask = np.full((6, 8), 255, dtype=np.uint8)
        mask[:3] = i
        for label_set in ("objects", "context"):
            Image.fromarray(mask).save(tmp_path / "masks" / label_set / f"{key}.png")
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    return tmp_path


def test_reads_images_masks_and_classes(root: Path) -> None:
    ds = SegmentationFolder(root, "objects")
    assert (len(ds), ds.label_set, ds.classes, ds.background_words) == (
        2, "objects", ["background", "cat", "dog"], ["sky", "wall"])
    image, mask, key = ds[1]
    assert key == "img1" and image.mode == "RGB" and image.size == (8, 6)
    assert mask.dtype == np.uint8 and mask.shape == (6, 8)
    assert set(np.unique(mask)) == {1, 255}
    assert SegmentationFolder(root, "context").background_words == []


def test_errors(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        SegmentationFolder(root / "nope", "objects")
    with pytest.raises(ValueError, match=r"unknown label set 'parts'.*available: \['context', 'empty', 'objects'\]"):
        SegmentationFolder(root, "parts")
    with pytest.raises(ValueError, match="label set 'empty' has no classes"):
        SegmentationFolder(root, "empty")
    (root / "masks" / "objects" / "img0.png").unlink()
    with pytest.raises(ValueError, match="'img0' has no mask"):
        SegmentationFolder(root, "objects")
    (root / "classes.json").unlink()
    with pytest.raises(FileNotFoundError, match="classes.json"):
        SegmentationFolder(root, "objects")


def test_background_threshold_is_read_per_label_set(root: Path) -> None:
    spec = {"label_sets": {"voc": ["background", "cat"], "objects": ["background", "cat"]},
            "background_threshold": {"voc": 0.95}}
    (root / "classes.json").write_text(json.dumps(spec))
    (root / "masks" / "voc").mkdir()
    for mask in (root / "masks" / "objects").iterdir():
        (root / "masks" / "voc" / mask.name).write_bytes(mask.read_bytes())
    voc = SegmentationFolder(root, "voc")
    assert voc.background_threshold == 0.95 and voc.background_words == []
    with pytest.raises(ValueError, match="background words"):  # a background class that could never win
        SegmentationFolder(root, "objects")


@pytest.mark.parametrize("spec, message", [
    ({"label_sets": {"objects": "cat"}}, "must be a list"),
    ({"label_sets": ["cat"]}, "must be an object"),
    ({"label_sets": {"objects": ["background", "cat"]}, "background_words": ["sky"]}, "must be an object"),
    ({"label_sets": {"objects": ["background", "cat"]}, "background_threshold": {"objects": "high"}}, "a number"),
    ({"label_sets": {"objects": ["background", "cat"]}, "background_threshold": {"objects": 2.0}}, r"\[0, 1\]"),
    ([1, 2], "must hold an object"),
])
def test_malformed_classes_json_is_refused_clearly(root: Path, spec: object, message: str) -> None:
    (root / "classes.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=message):
        SegmentationFolder(root, "objects")


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    with pytest.raises(ValueError, match="no images"):
        SegmentationFolder(tmp_path, "objects")


def test_a_mask_of_the_wrong_size_or_mode_is_a_clear_error(tmp_path: Path) -> None:
    from mixreorg_edge.data.segfolder import read_class_mask

    Image.new("L", (8, 6)).save(tmp_path / "small.png")
    Image.new("RGB", (10, 6)).save(tmp_path / "colour.png")
    assert read_class_mask(tmp_path / "small.png", (8, 6)).shape == (6, 8)
    with pytest.raises(ValueError, match=r"small.png is \(8, 6\) but its image is \(10, 6\)"):
        read_class_mask(tmp_path / "small.png", (10, 6))
    with pytest.raises(ValueError, match="colour.png has mode RGB"):
        read_class_mask(tmp_path / "colour.png", (10, 6))


def test_a_truncated_jpeg_is_named_not_a_traceback(root: Path) -> None:
    """`eval` on a folder with a cut-off JPEG raised PIL's bare "image file is truncated" with no file name."""
    path = root / "images" / "img0.jpg"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cannot read image .*img0.jpg"):
        SegmentationFolder(root, "objects")[0]


def test_eval_names_a_truncated_jpeg(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    val = tmp_path / "val"
    shutil.copytree(tiny_world / "val", val)
    broken = sorted((val / "images").iterdir())[0]
    assert broken.suffix == ".jpg"
    broken.write_bytes(broken.read_bytes()[:-40])
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_teacher_run), "--data", str(val)])
    assert result.exit_code == 2 and broken.name in "".join(result.output.split())  # rich wraps long paths
    assert "truncated" in result.output and "Traceback" not in result.output
