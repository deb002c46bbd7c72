"""Synthetic caption world: determinism, mask/caption consistency, on-disk layout."""

import colorsys
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixreorg_edge.data.captions import TEMPLATES, caption_for, join_things
from mixreorg_edge.data.synth import (
    DEFAULT_THING_COLOURS,
    IGNORE_INDEX,
    LABEL_SETS,
    STUFF,
    THING_COLOURS,
    THINGS,
    make_caption,
    make_sample,
    render_scene,
    write_synthetic_world,
)
from mixreorg_edge.data.synth.colors import HUE_SPREAD, Palette
from mixreorg_edge.data.synth.icons import thing_palette

SIZE = 64


def _words(caption: str, vocab: tuple[str, ...]) -> set[str]:
    return {w for w in vocab if re.search(rf"\b{w}\b", caption)}


def _dir_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_synthetic_world(out, train=12, val=6, size=SIZE, seed=3, shard_size=5, workers=1)
    return out


def test_vocabulary_and_label_sets():
    assert len(THINGS) >= 10 and len(set(THINGS)) == len(THINGS)
    assert len(STUFF) >= 4 and not set(THINGS) & set(STUFF)
    assert LABEL_SETS == {"objects": ("background", *THINGS), "context": (*THINGS, *STUFF)}
    assert IGNORE_INDEX == 255
    assert len(set(TEMPLATES)) >= 20


def test_join_things_grammar():
    assert join_things(["car"]) == "a car"
    assert join_things(["car", "umbrella"]) == "a car and an umbrella"
    assert join_things(["car", "fish", "sun"]) == "a car, a fish and a sun"


def test_same_seed_same_sample_different_seed_differs():
    a_scene, a_cap = make_sample(7, "train", 5, SIZE)
    b_scene, b_cap = make_sample(7, "train", 5, SIZE)
    assert a_cap == b_cap and a_scene.things == b_scene.things and a_scene.stuff == b_scene.stuff
    assert np.array_equal(a_scene.image, b_scene.image)
    for name in LABEL_SETS:
        assert np.array_equal(a_scene.masks[name], b_scene.masks[name])
    c_scene, _ = make_sample(8, "train", 5, SIZE)
    v_scene, _ = make_sample(7, "val", 5, SIZE)
    assert not np.array_equal(a_scene.image, c_scene.image)
    assert not np.array_equal(a_scene.image, v_scene.image)


def test_scene_masks_are_consistent():
    rng = np.random.default_rng(0)
    stuff_seen = set()
    for _ in range(40):
        scene = render_scene(rng, SIZE)
        stuff_seen.add(scene.stuff)
        assert scene.image.shape == (SIZE, SIZE, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.things) <= 4 and len(set(scene.things)) == len(scene.things)
        assert scene.stuff in STUFF
        obj, ctx = scene.masks["objects"], scene.masks["context"]
        assert obj.shape == ctx.shape == (SIZE, SIZE) and obj.dtype == ctx.dtype == np.uint8
        valid_ctx = set(range(len(LABEL_SETS["context"]))) | {IGNORE_INDEX}
        assert set(np.unique(ctx)) <= valid_ctx
        present = {THINGS.index(t) + 1 for t in scene.things}
        assert set(np.unique(obj)) <= present | {0, IGNORE_INDEX}
        for k in present:
            assert (obj == k).sum() > 0, f"{THINGS[k - 1]} has no pixels"
        # The two label sets partition the image identically.
        assert np.array_equal(obj == IGNORE_INDEX, ctx == IGNORE_INDEX)
        stuff_idx = LABEL_SETS["context"].index(scene.stuff)
        assert np.array_equal(obj == 0, ctx == stuff_idx)
        things = (obj != 0) & (obj != IGNORE_INDEX)
        assert np.array_equal(ctx[things] + 1, obj[things])
    assert stuff_seen == set(STUFF)


def test_captions_name_only_scene_content():
    rng = np.random.default_rng(1)
    named_stuff = dropped = multi = 0
    for _ in range(150):
        scene = render_scene(rng, SIZE)
        caption = make_caption(rng, scene)
        named = _words(caption, THINGS)
        assert named and named <= set(scene.things), caption
        assert _words(caption, STUFF) <= {scene.stuff}, caption
        assert not re.search(r"\b(left|right)\b", caption)
        named_stuff += scene.stuff in caption
        if len(scene.things) > 1:
            multi += 1
            dropped += len(named) < len(scene.things)
    assert 0.3 < named_stuff / 150 < 0.7
    assert 0.02 < dropped / multi < 0.35


def test_captions_vary_and_use_many_templates():
    rng = np.random.default_rng(2)
    captions = {caption_for(rng, ("car", "tree"), "grass") for _ in range(300)}
    assert len(captions) > 60
    assert any("a photo of a car" in c or "a photo of a tree" in c for c in captions)


def test_train_shards_hold_only_jpg_and_txt(world: Path):
    shards = sorted((world / "train").glob("*.tar"))
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    keys = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext in ("jpg", "txt"), member.name
                data = tar.extractfile(member).read()
                if ext == "jpg":
                    keys.append(key)
                    assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)
                else:
                    assert _words(data.decode("utf-8"), THINGS)
    assert keys == [f"{i:08d}" for i in range(12)]


def test_val_layout(world: Path):
    val = world / "val"
    keys = [f"{i:08d}" for i in range(6)]
    assert sorted(p.stem for p in (val / "images").glob("*.jpg")) == keys
    for name, classes in LABEL_SETS.items():
        assert sorted(p.stem for p in (val / "masks" / name).glob("*.png")) == keys
        mask = Image.open(val / "masks" / name / f"{keys[0]}.png")
        assert mask.mode == "L" and mask.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(mask))) <= set(range(len(classes))) | {IGNORE_INDEX}
    classes = json.loads((val / "classes.json").read_text())
    assert classes["label_sets"] == {k: list(v) for k, v in LABEL_SETS.items()}
    assert classes["background_words"] == {"objects": list(STUFF)}
    lines = [json.loads(line) for line in (val / "captions.jsonl").read_text().splitlines()]
    assert [d["key"] for d in lines] == keys
    meta = json.loads((world / "world.json").read_text())
    assert meta["counts"] == {"train": 12, "val": 6} and meta["seed"] == 3 and meta["size"] == SIZE
    assert meta["thing_colours"] == DEFAULT_THING_COLOURS == "by-class"
    assert meta["things"] == list(THINGS) and meta["stuff"] == list(STUFF)


def test_world_is_deterministic_across_workers_and_seeds(world: Path, tmp_path: Path):
    write_synthetic_world(tmp_path / "two", train=12, val=6, size=SIZE, seed=3, shard_size=5, workers=2)
    assert _dir_bytes(tmp_path / "two") == _dir_bytes(world)
    write_synthetic_world(tmp_path / "other", train=12, val=6, size=SIZE, seed=4, shard_size=5, workers=1)
    other = _dir_bytes(tmp_path / "other")
    assert other["val/images/00000000.jpg"] != _dir_bytes(world)["val/images/00000000.jpg"]


def test_rewrite_removes_stale_shards_only_when_told(tmp_path: Path):
    """A second `data synth` of other settings into a world used to delete its shards and images silently."""
    write_synthetic_world(tmp_path, train=6, val=2, size=SIZE, shard_size=2, workers=1)
    with pytest.raises(FileExistsError, match=r"other settings \(counts .*--overwrite"):
        write_synthetic_world(tmp_path, train=2, val=1, size=SIZE, shard_size=2, workers=1)
    assert len(list((tmp_path / "train").glob("*.tar"))) == 3
    write_synthetic_world(tmp_path, train=6, val=2, size=SIZE, shard_size=2, workers=1)  # the same world again
    write_synthetic_world(tmp_path, train=2, val=1, size=SIZE, shard_size=2, workers=1, overwrite=True)
    assert len(list((tmp_path / "train").glob("*.tar"))) == 1
    assert len(list((tmp_path / "val" / "images").glob("*.jpg"))) == 1


def test_synth_refuses_a_folder_of_other_data_and_a_file(tmp_path: Path):
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "mine"), "--train", "2", "--val", "1"])
    assert result.exit_code == 2 and "holds no synthetic world" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "file"), "--train", "2", "--val", "1"])
    assert result.exit_code == 2 and "is a file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "kwargs", [{"size": 31}, {"train": -1}, {"val": -1}, {"shard_size": 0}, {"workers": 0}, {"thing_colours": "pink"}]
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict):
    args = {"train": 1, "val": 1, **kwargs}
    with pytest.raises(ValueError):
        write_synthetic_world(tmp_path, **args)


def test_render_scene_rejects_small_size():
    with pytest.raises(ValueError, match="size"):
        render_scene(np.random.default_rng(0), size=16)


def _hues(colours: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(c / 255 for c in colour))[0] * 360 for colour in colours])


def _hue_distance(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((a - b + 180) % 360 - 180)


def test_free_thing_colours_take_any_hue_and_greys():
    rng = np.random.default_rng(0)
    palette = thing_palette("car", "free")
    assert palette == Palette()
    man_made = [palette.man_made(rng) for _ in range(400)]
    assert any(r == g == b for r, g, b in man_made)  # greys
    hues = _hues([palette.any(rng) for _ in range(400)])
    assert np.histogram(hues, bins=12, range=(0, 360))[0].min() > 0  # every part of the colour wheel


def test_by_class_thing_colours_stay_in_each_things_own_hue_band():
    centres = [thing_palette(thing, "by-class").hue for thing in THINGS]
    gaps = [_hue_distance(np.array([a]), b)[0] for i, a in enumerate(centres) for b in centres[i + 1 :]]
    assert min(gaps) >= 2 * HUE_SPREAD  # the bands do not overlap
    rng = np.random.default_rng(0)
    for thing, centre in zip(THINGS, centres):
        palette = thing_palette(thing, "by-class")
        colours = [palette.any(rng) for _ in range(100)] + [palette.man_made(rng) for _ in range(100)]
        assert not any(r == g == b for r, g, b in colours)
        assert _hue_distance(_hues(colours), centre).max() <= HUE_SPREAD + 2  # + rounding to 8-bit RGB


def test_free_world_is_recorded_and_differs_from_the_default_by_class_one(world: Path, tmp_path: Path):
    assert THING_COLOURS == ("free", "by-class")
    write_synthetic_world(tmp_path, train=12, val=6, size=SIZE, seed=3, shard_size=5, workers=1, thing_colours="free")
    assert json.loads((tmp_path / "world.json").read_text())["thing_colours"] == "free"
    free, by_class = _dir_bytes(tmp_path), _dir_bytes(world)
    assert sum(free[k] != by_class[k] for k in by_class if k.startswith("val/images/")) > 0
