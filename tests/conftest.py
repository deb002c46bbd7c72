"""Shared fixtures: a tiny teacher configuration and a tiny synthetic world (fast on 2 CPU cores)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from mixreorg_edge.teacher.config import (
    EvalConfig,
    ImageEncoderConfig,
    MixingConfig,
    TeacherConfig,
    TextEncoderConfig,
)
from mixreorg_edge.training import TrainConfig

torch.set_num_threads(2)


def tiny_teacher_config(**mixing: object) -> TeacherConfig:
    """A teacher small enough to train a few steps in well under a second per step."""
    return TeacherConfig(
        preset="tiny-test",
        embed_dim=32,
        image=ImageEncoderConfig(
            image_size=32, patch_size=8, stem="conv", width=32, heads=2, depths=(2, 1, 1),
            group_tokens=(4, 2), output_groups=(4, 2),
        ),
        text=TextEncoderConfig(context_length=16, width=32, heads=2, layers=1),
        mixing=MixingConfig(images=2, **mixing),
        eval=EvalConfig(short_side=32, window=32, stride=16),
    )


def tiny_train_config(**overrides: object) -> TrainConfig:
    cfg = TrainConfig(batch_size=8, lr=1e-3, warmup_steps=2, steps=6, save_every=3, log_every=1, seed=0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def shards_with_a_corrupt_jpeg(world: Path, out: Path, shard_name: str) -> Path:
    """A copy of `world`'s training shards plus one shard `shard_name` holding a JPEG that cannot be decoded."""
    out.mkdir(parents=True)
    for source in sorted((world / "train").glob("*.tar")):
        (out / source.name).write_bytes(source.read_bytes())
    with tarfile.open(out / shard_name, "w") as tar:
        for name, payload in (("bad.jpg", b"\xff\xd8\xff\xe0 not a jpeg"), ("bad.txt", b"a photo of a car")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out


@pytest.fixture(autouse=True, scope="session")
def wide_cli_consoles() -> None:
    """The CLI's consoles do not wrap: rich breaks lines at 80 columns when not on a terminal, so a message split
    wherever a temporary path's length put the line end, and a test looking for a phrase in it failed by chance."""
    from mixreorg_edge import cli

    cli.console.width = cli.err_console.width = 1000


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-image synthetic world at 32 px (train shards + a 6-image labelled val folder)."""
    from mixreorg_edge.data.synth import write_synthetic_world

    out = tmp_path_factory.mktemp("world")
    write_synthetic_world(out, train=64, val=6, size=32, seed=3, shard_size=32, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_teacher_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny teacher trained for a few steps on the tiny world."""
    from mixreorg_edge.teacher.train import train_teacher

    run = tmp_path_factory.mktemp("teacher") / "run"
    train_teacher(tiny_world, run, tiny_teacher_config(), tiny_train_config(steps=3), show_progress=False)
    return run
