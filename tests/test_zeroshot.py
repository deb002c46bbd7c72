"""Sliding-window inference: protocol checks, labels of large images made in bands of rows, where the mask
refinement happens."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mixreorg_edge.head import VocabularyHead
from mixreorg_edge.runs import load_model
from mixreorg_edge.vocab import build_vocabulary
from mixreorg_edge.refinement import MaskRefinement, refine_logits
from mixreorg_edge.zeroshot import (
    ZeroShotProtocol, bilinear_weights, predict_label_map, resized_input, sliding_window_logits,
)


@pytest.mark.parametrize("source, target", [((8, 8), (64, 64)), ((7, 13), (50, 37)), ((16, 9), (5, 100))])
def test_bilinear_weights_are_interpolates(source: tuple[int, int], target: tuple[int, int]) -> None:
    x = torch.randn(5, *source)
    expected = F.interpolate(x[None], size=target, mode="bilinear", align_corners=False)[0]
    banded = torch.einsum("yh,vhw,xw->vyx", bilinear_weights(target[0], source[0]), x,
                          bilinear_weights(target[1], source[1]))
    assert torch.allclose(banded, expected, atol=1e-5)


@pytest.mark.parametrize("background_words, threshold", [(["sky", "grass"], 0.0), ([], 0.95)])
@pytest.mark.parametrize("refine_iterations", [0, 3])
def test_large_label_maps_are_made_in_bands_with_the_same_result(
    tiny_teacher_run: Path, refine_iterations: int, background_words: list[str], threshold: float
) -> None:
    """Bands of rows label as the whole image does (GroupViT's fixed threshold: with the whole image's statistics)."""
    model, config = load_model(tiny_teacher_run)
    classes = ["background", "car", "tree", "house", "boat", "fish", "sun", "cup"]  # more than the 5 kept
    head = VocabularyHead(build_vocabulary(model, classes, background_words, "simple", threshold))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 141, 3), dtype=np.uint8))
    protocol = ZeroShotProtocol(short_side=32, window=32, stride=16, refinement=MaskRefinement(refine_iterations))
    whole = predict_label_map(model, head, image, protocol)
    channels = head.classifier.out_channels
    banded = predict_label_map(model, head, image, protocol, max_bytes=channels * 141 * 4 * 7)  # 7 rows a band
    assert whole.shape == banded.shape == (90, 141)
    assert (whole == banded).mean() > 0.999  # float rounding may flip a near-tie


def test_refinement_happens_at_the_resized_scale_before_upsampling(tiny_teacher_run: Path) -> None:
    model, _ = load_model(tiny_teacher_run)
    head = VocabularyHead(build_vocabulary(model, ["background", "car", "tree"], ["sky", "grass"], "simple"))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 72, 3), dtype=np.uint8))
    protocol = ZeroShotProtocol(short_side=32, window=32, stride=16, refinement=MaskRefinement(5, (1, 2)))
    pixels = resized_input(image, protocol, torch.device("cpu"))
    logits = sliding_window_logits(model, head, pixels, protocol.window, protocol.stride)
    refined = F.interpolate(refine_logits(pixels, logits, protocol.refinement), size=(48, 72), mode="bilinear",
                            align_corners=False)
    assert (predict_label_map(model, head, image, protocol) == head.labels(refined)[0].numpy()).all()
    assert not torch.allclose(refine_logits(pixels, logits, protocol.refinement), logits, atol=1e-4)


def test_a_stride_longer_than_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="must not exceed the window"):
        ZeroShotProtocol(short_side=64, window=32, stride=48)
    with pytest.raises(ValueError, match="positive"):
        ZeroShotProtocol(short_side=0, window=32, stride=16)
