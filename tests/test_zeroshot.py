"""Sliding-window inference: protocol checks, and labels of large images made in bands of rows."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mixreorg_edge.head import VocabularyHead
from mixreorg_edge.runs import load_model
from mixreorg_edge.vocab import build_vocabulary
from mixreorg_edge.zeroshot import SlidingWindow, bilinear_weights, predict_label_map


@pytest.mark.parametrize("source, target", [((8, 8), (64, 64)), ((7, 13), (50, 37)), ((16, 9), (5, 100))])
def test_bilinear_weights_are_interpolates(source: tuple[int, int], target: tuple[int, int]) -> None:
    x = torch.randn(5, *source)
    expected = F.interpolate(x[None], size=target, mode="bilinear", align_corners=False)[0]
    banded = torch.einsum("yh,vhw,xw->vyx", bilinear_weights(target[0], source[0]), x,
                          bilinear_weights(target[1], source[1]))
    assert torch.allclose(banded, expected, atol=1e-5)


def test_large_label_maps_are_made_in_bands_with_the_same_result(tiny_teacher_run: Path) -> None:
    model, config = load_model(tiny_teacher_run)
    head = VocabularyHead(build_vocabulary(model, ["background", "car", "tree"], ["sky", "grass"], "simple"))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (90, 141, 3), dtype=np.uint8))
    protocol = SlidingWindow(short_side=32, window=32, stride=16)
    whole = predict_label_map(model, head, image, protocol)
    banded = predict_label_map(model, head, image, protocol, max_bytes=5 * 141 * 4 * 7)  # 7 rows a band
    assert whole.shape == banded.shape == (90, 141)
    assert (whole == banded).mean() > 0.999  # float rounding may flip a near-tie


def test_a_stride_longer_than_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="must not exceed the window"):
        SlidingWindow(short_side=64, window=32, stride=48)
    with pytest.raises(ValueError, match="positive"):
        SlidingWindow(short_side=0, window=32, stride=16)
