"""Stem geometry: each token's receptive field is centred on its patch (issue 31), measured by the gradient-centroid
method; runs recorded with the legacy (off-centre) stem still load and score exactly as they did."""

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_teacher_config
from mixreorg_edge.teacher.config import ImageEncoderConfig, TeacherConfig
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.teacher.stems import build_stem

SIZE, PATCH = 64, 8


def _gradient_maps(stem: nn.Module, images: int) -> torch.Tensor:
    """(T, SIZE, SIZE): |d token / d input| of every token (channels summed), summed over random images and colour
    channels. One backward pass: copy t of each image only feeds token t's output."""
    grid = SIZE // PATCH
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols, tokens = rows.flatten(), cols.flatten(), grid * grid
    pixels = torch.randn(images, 1, 3, SIZE, SIZE).expand(-1, tokens, -1, -1, -1).reshape(-1, 3, SIZE, SIZE)
    pixels = pixels.clone().requires_grad_(True)
    out = stem(pixels).reshape(images, tokens, -1, grid, grid)
    out[:, torch.arange(tokens), :, rows, cols].sum().backward()
    return pixels.grad.reshape(images, tokens, 3, SIZE, SIZE).abs().sum((0, 2))


def centroid_offset(image: ImageEncoderConfig, inits: int = 4) -> torch.Tensor:
    """Mean over tokens of (centroid of |d token / d input|) - (patch centre), (dy, dx) in pixels, for untrained stems
    (gradients summed over `inits` random initialisations, so one draw's lopsided kernels do not decide)."""
    maps = sum(_gradient_maps(_untrained(image, seed), images=2) for seed in range(inits))
    weights = maps / maps.sum((1, 2), keepdim=True)
    coords = torch.arange(SIZE, dtype=torch.float32)
    centroid = torch.stack([(weights.sum(2) * coords).sum(1), (weights.sum(1) * coords).sum(1)], dim=1)
    grid = SIZE // PATCH
    centres = PATCH * torch.arange(grid, dtype=torch.float32) + (PATCH - 1) / 2
    patch_centre = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).reshape(-1, 2)
    return (centroid - patch_centre).mean(0)


def _untrained(image: ImageEncoderConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_stem(image).eval()  # eval: BatchNorm's identity running statistics, no coupling across the batch


def _stem_config(stem: str, centred: bool) -> ImageEncoderConfig:
    return ImageEncoderConfig(image_size=SIZE, patch_size=PATCH, stem=stem, stem_channels=(8, 16, 16), width=32,
                              stem_centred=centred)


@pytest.mark.parametrize("stem", ["conv", "resnet", "patch"])
def test_every_new_stem_is_centred_on_its_patches(stem: str) -> None:
    offset = centroid_offset(_stem_config(stem, centred=True))
    assert offset.abs().max() < 0.5, offset


@pytest.mark.parametrize("stem", ["conv", "resnet"])
def test_the_legacy_stem_looks_half_a_patch_up_left(stem: str) -> None:
    """What the issue measured (about -3.6 px for an untrained toy stem): the measurement above sees it."""
    offset = centroid_offset(_stem_config(stem, centred=False))
    assert (offset < -2.5).all(), offset


def test_new_runs_get_the_centred_stem_and_recorded_runs_keep_theirs() -> None:
    toy, _ = get_preset("toy")
    assert toy.image.stem_centred and tiny_teacher_config().image.stem_centred
    recorded = toy.to_dict()
    assert TeacherConfig.from_dict(recorded).image.stem_centred  # the key, once recorded, is kept
    del recorded["image"]["stem_centred"]  # a config written before the key existed
    legacy = TeacherConfig.from_dict(recorded)
    assert not legacy.image.stem_centred and legacy.to_dict()["image"]["stem_centred"] is False
    assert build_stem(legacy.image)[0].kernel_size == (3, 3) and build_stem(toy.image)[0].kernel_size == (4, 4)


def test_a_run_recorded_with_the_legacy_stem_loads_it_and_computes_as_before(tmp_path: Path) -> None:
    """A run saved before the centred stems (its config has no `stem_centred`) gets the 3x3 stem back, and the same
    weights give the same dense embeddings, so its scores do not move."""
    from dataclasses import replace

    from mixreorg_edge.checkpoint import save_model
    from mixreorg_edge.runs import MODEL_FILE, load_model
    from mixreorg_edge.teacher.model import MixReorgTeacher

    cfg = tiny_teacher_config()
    cfg = replace(cfg, image=replace(cfg.image, stem_centred=False))
    torch.manual_seed(0)
    legacy = MixReorgTeacher(cfg).eval()
    recorded = cfg.to_dict()
    del recorded["image"]["stem_centred"]  # as configs were written before the key existed
    save_model(legacy, tmp_path / MODEL_FILE, {"kind": "teacher", "teacher": recorded})
    loaded, _ = load_model(tmp_path)
    assert not loaded.cfg.image.stem_centred and loaded.image_encoder.stem[0].kernel_size == (3, 3)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_dense(images), legacy.encode_dense(images))
