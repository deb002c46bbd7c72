"""Mask refinement (PAMR) of dense logits: an average (constants and class biases pass through), that moves a
misplaced class boundary onto the image's colour edge."""

from __future__ import annotations

import pytest
import torch

from mixreorg_edge.refinement import MaskRefinement, neighbour_affinities, refine_logits

REFINE = MaskRefinement(iterations=20, dilations=(1, 2, 4, 8))


def _two_colour_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 32x32 image, red left of column 20 and blue from it (plus a little noise); logits of two classes whose
    boundary a coarse grid put at column 12; the colour truth (0 red, 1 blue)."""
    generator = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :, :20] = 1.0
    image[:, 2, :, 20:] = 1.0
    image += 0.05 * torch.randn(image.shape, generator=generator)
    ramp = (torch.arange(32.0) - 11.5) / 4.0
    blue = ramp.expand(32, 32)
    logits = torch.stack([-blue, blue])[None]
    truth = (torch.arange(32) >= 20).long().expand(32, 32)
    return image, logits, truth


def test_affinities_are_weights_that_sum_to_one() -> None:
    image = torch.rand(2, 3, 16, 20)
    weights = neighbour_affinities(image, (1, 3))
    assert weights.shape == (2, 16, 16, 20) and (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 16, 20), atol=1e-5)


def test_constants_and_class_biases_pass_through() -> None:
    image, logits = torch.rand(1, 3, 24, 24), torch.randn(1, 5, 24, 24)
    constant = torch.full_like(logits, 1.5)
    assert torch.allclose(refine_logits(image, constant, REFINE), constant, atol=1e-5)
    shift = torch.tensor([0.0, 0.0, 3.0, 3.0, -1.0])[None, :, None, None]
    assert torch.allclose(refine_logits(image, logits + shift, REFINE), refine_logits(image, logits, REFINE) + shift,
                          atol=1e-4)  # so a background bias is the same before or after refinement


def test_refinement_moves_a_misplaced_boundary_onto_the_colour_edge() -> None:
    image, logits, truth = _two_colour_scene()
    before = (logits.argmax(dim=1)[0] == truth).float().mean().item()
    after = (refine_logits(image, logits, REFINE).argmax(dim=1)[0] == truth).float().mean().item()
    assert before == pytest.approx(0.75)  # columns 12 - 19 wrong
    assert after > 0.97


def test_zero_iterations_is_off_and_bad_settings_are_refused() -> None:
    image, logits, _ = _two_colour_scene()
    assert refine_logits(image, logits, MaskRefinement()) is logits
    with pytest.raises(ValueError, match="iterations must be 0"):
        MaskRefinement(iterations=-1)
    with pytest.raises(ValueError, match="dilations"):
        MaskRefinement(iterations=2, dilations=(0, 2))
    with pytest.raises(ValueError, match="differ in batch or size"):
        refine_logits(image[:, :, :16], logits, REFINE)
