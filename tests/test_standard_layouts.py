import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mixreorg_edge.cli import app
from mixreorg_edge.data.segfolder import SegmentationFolder
from mixreorg_edge.data.standard_layouts import StandardLayoutDataset, open_segmentation_dataset

runner = CliRunner()


def _image(path: Path, size: tuple[int, int] = (48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _mask(path: Path, values: list[int], mode: str = "L", size: tuple[int, int] = (48, 40)) -> None:
    """A mask whose rows cycle through `values`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.array([values[i % len(values)] for i in range(size[1])], dtype=np.uint8)
    pixels = np.ascontiguousarray(np.repeat(rows[:, None], size[0], axis=1))
    mask = Image.frombytes(mode, size, pixels.tobytes())
    if mode == "P":  # VOC's masks: palette images whose indices are the classes
        mask.putpalette([channel for i in range(256) for channel in (i, 255 - i, i // 2)])
    mask.save(path)


def _voc(root: Path, values: list[int]) -> Path:
    """A VOC2012-style root: two images, one of them in val.txt, with palette masks."""
    for key in ("2007_000033", "2007_000042"):
        _image(root / "JPEGImages" / f"{key}.jpg")
        _mask(root / "SegmentationClass" / f"{key}.png", values, mode="P")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    return root


def test_voc_reads_the_val_list_with_palette_masks_and_groupvit_classes(tmp_path: Path) -> None:
    dataset = open_segmentation_dataset(_voc(tmp_path / "VOC2012", [0, 15, 255]), "voc")
    assert isinstance(dataset, StandardLayoutDataset) and len(dataset) == 1
    assert len(dataset.classes) == 21 and dataset.classes[0] == "background"
    assert dataset.background_threshold == pytest.approx(0.95)
    image, mask, key = dataset[0]
    assert key == "2007_000033" and image.size == (48, 40) and set(np.unique(mask)) == {0, 15, 255}


def test_ade20k_shifts_labels_and_ignores_other(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    _image(root / "images" / "validation" / "ADE_val_00000001.jpg")
    _mask(root / "annotations" / "validation" / "ADE_val_00000001.png", [0, 1, 150, 255])
    dataset = open_segmentation_dataset(root, "ade20k")
    _, mask, _ = dataset[0]
    assert len(dataset.classes) == 150 and mask[:4, 0].tolist() == [255, 0, 149, 255]  # mmseg's reduce_zero_label
    _mask(root / "annotations" / "validation" / "ADE_val_00000001.png", [0, 151])
    with pytest.raises(ValueError, match="holds the value 151, but ADE20K masks hold 0 - 150 and 255"):
        dataset[0]


def test_coco_object_masks_carry_their_suffix(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _image(root / "images" / "val2017" / "000000000139.jpg")
    _mask(root / "annotations" / "val2017" / "000000000139_instanceTrainIds.png", [0, 1, 80])
    dataset = open_segmentation_dataset(root, "coco_object")
    assert len(dataset.classes) == 81 and set(np.unique(dataset[0][1])) == {0, 1, 80}


def test_context_mask_of_another_label_set_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "VOC2010"
    _image(root / "JPEGImages" / "2008_000002.jpg")
    _mask(root / "SegmentationClassContext" / "2008_000002.png", [0, 59, 60])  # 60: not a Context-60 class
    (root / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (root / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    dataset = open_segmentation_dataset(root, "context")
    with pytest.raises(ValueError, match=r"holds the value 60, but PASCAL Context .* masks hold 0 - 59 and 255"):
        dataset[0]


def test_our_folder_layout_keeps_its_label_sets(tiny_world: Path) -> None:
    assert isinstance(open_segmentation_dataset(tiny_world / "val", "context"), SegmentationFolder)


@pytest.mark.parametrize("label_set, message", [
    ("objects", "holds a benchmark's standard layout: give --label-set voc"),
    ("ade20k", "does not hold the ADE20K layout: expected images/validation/ .* of --label-set voc"),
])
def test_a_benchmark_root_with_the_wrong_label_set_says_which_one(label_set: str, message: str,
                                                                  tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", [0, 1])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        open_segmentation_dataset(root, label_set)


def test_a_folder_of_neither_layout_names_both(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(FileNotFoundError, match=r"classes.json not found .* --label-set voc\|context\|coco_object\|ade20k"):
        open_segmentation_dataset(tmp_path / "photos", "objects")
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        open_segmentation_dataset(tmp_path / "nope", "objects")


def test_val_list_with_windows_line_ends_and_upper_case_suffixes(tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", [0, 1])
    (root / "JPEGImages" / "2007_000033.jpg").rename(root / "JPEGImages" / "2007_000033.JPG")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"\xef\xbb\xbf2007_000042 \r\n2007_000033\r\n")
    dataset = open_segmentation_dataset(root, "voc")
    assert [dataset[i][2] for i in range(len(dataset))] == ["2007_000042", "2007_000033"]


def test_a_toolkit_folder_without_classes_json_says_so(tiny_world: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "val"
    shutil.copytree(tiny_world / "val", copy)
    (copy / "classes.json").unlink()
    with pytest.raises(FileNotFoundError, match="classes.json not found"):
        open_segmentation_dataset(copy, "context")  # also the name of a benchmark


def test_missing_val_list_is_a_clear_error(tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", [0, 1])
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation list .*val.txt is missing"):
        open_segmentation_dataset(root, "voc")


def test_eval_scores_a_voc_root_in_place(tiny_teacher_run: Path, tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", [0, 15, 255])
    out = tmp_path / "voc.json"
    result = runner.invoke(app, ["eval", "--model", str(tiny_teacher_run), "--data", str(root), "--label-set", "voc",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["label_set"] == "voc" and scores["num_images"] == 1 and len(scores["per_class_iou"]) == 21
    refused = runner.invoke(app, ["eval", "--model", str(tiny_teacher_run), "--data", str(root)])
    assert refused.exit_code == 2 and "--label-set voc" in refused.output


def test_calibrate_refuses_a_benchmark_validation_split(tiny_teacher_run: Path, tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2012", [0, 15])
    result = runner.invoke(app, ["calibrate", "--model", str(tiny_teacher_run), "--data", str(root), "--label-set",
                                 "voc", "--out", str(tmp_path / "calibration.json")])
    assert result.exit_code == 2 and "validation split" in result.output
    assert not (tmp_path / "calibration.json").exists()
