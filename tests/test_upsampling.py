"""Sub-pixel bilinear upsampling equals F.interpolate, and the deployed graph's labels do not depend on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixreorg_edge.distill.student import DenseStudent, SegmentationModel, StudentConfig
from mixreorg_edge.upsampling import phase_kernel, phases_to_pixels, subpixel_bilinear, upsampling_factor
from mixreorg_edge.vocab import Vocabulary


def interpolate(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def test_phase_kernel_by_hand() -> None:
    """Factor 2: output pixel 2J sits at J - 1/4 (3/4 of J, 1/4 of J-1), pixel 2J+1 at J + 1/4."""
    kernel = phase_kernel(2).reshape(2, 2, 3, 3)  # (ry, rx, 3, 3)
    rows = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]])
    torch.testing.assert_close(kernel, rows[:, None, :, None] * rows[None, :, None, :])
    assert torch.allclose(phase_kernel(8).sum(dim=(1, 2, 3)), torch.ones(64))


@pytest.mark.parametrize("factor", [1, 2, 3, 8, 16])
def test_subpixel_equals_interpolate(factor: int) -> None:
    x = torch.randn(2, 5, 6, 7) * 4
    phases = subpixel_bilinear(x, factor)
    assert phases.shape == (2, 5, factor * factor * 6, 7)
    pixels = torch.stack([phases_to_pixels(phases[:, c], factor) for c in range(5)], dim=1)
    torch.testing.assert_close(pixels, interpolate(x, factor), atol=1e-5, rtol=1e-5)


def test_phases_to_pixels_moves_every_pixel_once() -> None:
    """A map of each pixel's own index, in phase layout, comes back as 0, 1, 2, ... in raster order."""
    factor, height, width = 4, 3, 5
    index = torch.arange(height * factor * width * factor).reshape(1, height * factor, width * factor)
    phases = index.reshape(1, height, factor, width, factor).permute(0, 2, 4, 1, 3).reshape(1, -1, width)
    assert torch.equal(phases_to_pixels(phases, factor), index)


def test_upsampling_factor() -> None:
    assert upsampling_factor((8, 8), (64, 64)) == 8
    assert upsampling_factor((8, 4), (64, 32)) == 8
    assert upsampling_factor((8, 8), (64, 32)) is None
    assert upsampling_factor((7, 7), (64, 64)) is None


@pytest.mark.parametrize("background", ["words", "threshold"])
def test_deployed_labels_equal_with_either_upsampling(background: str) -> None:
    """The student's labels graph gives the same labels with `subpixel` as with `interpolate`, with background words
    and under GroupViT's fixed-threshold rule (whose image-level statistics read every pixel in phase layout)."""
    torch.manual_seed(0)
    student = DenseStudent(StudentConfig(student="mobilenetv4", embed_dim=16, decoder_width=8)).eval()
    words = ["sky", "grass"] if background == "words" else []
    vocabulary = Vocabulary(["background", "car", "tree", "boat"], words,
                            F.normalize(torch.randn(3 + len(words), 16), dim=-1), logit_scale=30.0,
                            background_threshold=0.5 if background == "threshold" else 0.0)
    images = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        plain = SegmentationModel(student, vocabulary, output="labels").eval()(images)
        subpixel = SegmentationModel(student, vocabulary, output="labels", upsampling="subpixel").eval()(images)
    assert len(plain.unique()) > 2  # the comparison is not between two constant maps
    assert (plain == subpixel).float().mean() >= 0.9999
