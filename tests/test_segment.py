"""Reading the image `segment` is given."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixreorg_edge.segment import read_image

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_SHOW = 6  # the stored pixels must be turned 90 degrees clockwise to be shown upright


def test_read_image_turns_a_photo_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_SHOW
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.size == (20, 40) and image.mode == "RGB"
    shown = np.asarray(image).astype(int)
    assert shown[5, 10, 0] > 200 and shown[5, 10, 2] < 60  # the stored left edge is now the top
    assert shown[35, 10, 2] > 200 and shown[35, 10, 0] < 60


def test_read_image_keeps_an_image_without_orientation(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGBA", (31, 17), (10, 20, 30, 128)).save(path)
    image = read_image(path)
    assert image.size == (31, 17) and image.mode == "RGB"


def test_read_image_scales_a_16_bit_grayscale_png_instead_of_clipping_it(tmp_path: Path) -> None:
    levels = np.array([[0, 128 * 257, 65535]], np.uint16).repeat(4, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")  # Pillow reads it as 16-bit integers
    shown = np.asarray(read_image(path))
    assert shown.shape == (4, 3, 3)
    assert shown[0, :, 0].tolist() == [0, 128, 255] and (shown[..., 0] == shown[..., 2]).all()


def test_an_image_over_pillows_decompression_limit_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels: over twice the limit, Pillow's error
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(path)


def test_overlays_leave_background_unpainted_keep_each_class_colour_and_put_the_legend_beside() -> None:
    """A 64-px overlay was half covered by its legend, background was painted red, and a class changed colour with
    the vocabulary."""
    from mixreorg_edge.data.synth import LABEL_SETS
    from mixreorg_edge.overlay import MIN_DISPLAY_SIDE, class_colours, draw_overlay

    image = Image.new("RGB", (64, 32), (40, 80, 120))
    labels = np.zeros((32, 64), np.int64)
    labels[:, 32:] = 1
    one = np.asarray(draw_overlay(image, labels, ["background", "sun"]))
    two = np.asarray(draw_overlay(image, labels * 2, ["background", "car", "sun"]))
    scale = MIN_DISPLAY_SIDE // 32
    assert one.shape[0] == 32 * scale and one.shape[1] > 64 * scale  # enlarged, legend in a panel to the right
    assert (one[:, : 32 * scale] == (40, 80, 120)).all()  # background: the image itself, everywhere
    sun = one[5, 40 * scale]
    assert (sun != (40, 80, 120)).any() and (two[5, 40 * scale] == sun).all()  # "sun" keeps its colour
    names = list(LABEL_SETS["context"])
    colours = class_colours(names)
    assert len(set(colours)) == len(names)  # one vocabulary: every class its own colour
    assert class_colours(["Sun "])[0] == class_colours(["sun"])[0]


def test_read_image_shrinks_a_large_image_to_the_working_size_and_keeps_its_upright_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_SHOW
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (400, 200), (200, 30, 30)).save(path, exif=exif)
    image = read_image(path, max_pixels=5000)
    assert image.width * image.height <= 5000 and image.height > image.width  # shrunk, then turned upright
    assert image.info["original_size"] == (200, 400)
    assert "original_size" not in read_image(path, max_pixels=80000).info  # small enough: left whole


def test_segment_shrinks_a_12000_px_png_says_so_and_lets_no_pillow_warning_through(
    tiny_teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12000x12000 PNG peaked at 9.3 GB (the overlay maths at full size) and printed Pillow's raw
    DecompressionBombWarning."""
    from typer.testing import CliRunner

    from mixreorg_edge import segment
    from mixreorg_edge.cli import app

    path = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(path)  # 144 MP, over Pillow's warning limit; a few kB on disk
    monkeypatch.setattr(segment, "MAX_WORKING_PIXELS", 300 * 300)  # the test's working size: cheap to segment
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["segment", "--model", str(tiny_teacher_run), "--image", str(path),
                                          "--classes", "synthetic-objects", "--out", str(tmp_path / "seg.png")])
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "DecompressionBomb" not in result.output
    assert "huge.png is 12000x12000 (144 MP): segmented at 300x300" in " ".join(result.output.split())
    with Image.open(tmp_path / "seg.png") as overlay:
        assert overlay.height == 300  # the overlay is the working size, not 12000 px


def test_segment_refuses_an_image_over_pillows_hard_limit_with_one_line(
    tiny_teacher_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels: over twice the limit
    result = CliRunner().invoke(app, ["segment", "--model", str(tiny_teacher_run), "--image", str(path),
                                      "--classes", "synthetic-objects", "--out", str(tmp_path / "seg.png")])
    assert result.exit_code == 2
    assert "more than 2,000 pixels, Pillow's limit against decompression bombs" in " ".join(result.output.split())
    assert not (tmp_path / "seg.png").exists()
