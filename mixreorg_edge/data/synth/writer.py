"""Dataset writing: train WebDataset shards, the val folder with masks, world.json."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from ...progress import PhaseProgress
from .icons import DEFAULT_THING_COLOURS, THINGS, check_thing_colours
from .scene import IGNORE_INDEX, LABEL_SETS, MIN_SIZE, Scene, make_caption, render_scene
from .textures import STUFF

GENERATOR = "mixreorg_edge.data.synth"
VERSION = "1.0"
JPEG_QUALITY = 95
VAL_CHUNK = 250
SPLIT_IDS = {"train": 0, "val": 1}


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent RNG stream for one image, keyed by (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))


def make_sample(
    seed: int, split: str, index: int, size: int, thing_colours: str = DEFAULT_THING_COLOURS
) -> tuple[Scene, str]:
    """Render the scene and caption of image `index` in `split`."""
    rng = sample_rng(seed, split, index)
    scene = render_scene(rng, size, thing_colours)
    return scene, make_caption(rng, scene)


def _key(index: int) -> str:
    return f"{index:08d}"


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


@dataclass(frozen=True)
class _Task:
    out: Path
    split: str
    seed: int
    size: int
    start: int
    stop: int
    shard: int
    thing_colours: str


def _write_train_shard(task: _Task) -> list[tuple[str, str]]:
    path = task.out / "train" / f"shard-{task.shard:06d}.tar"
    with wds.TarWriter(str(path), encoder=False, mtime=0) as sink:
        for i in range(task.start, task.stop):
            scene, caption = make_sample(task.seed, "train", i, task.size, task.thing_colours)
            sink.write({"__key__": _key(i), "jpg": _jpeg(scene.image), "txt": caption.encode("utf-8")})
    return []


def _write_val_chunk(task: _Task) -> list[tuple[str, str]]:
    val = task.out / "val"
    captions = []
    for i in range(task.start, task.stop):
        scene, caption = make_sample(task.seed, "val", i, task.size, task.thing_colours)
        key = _key(i)
        (val / "images" / f"{key}.jpg").write_bytes(_jpeg(scene.image))
        for name, mask in scene.masks.items():
            Image.fromarray(mask).save(val / "masks" / name / f"{key}.png")
        captions.append((key, caption))
    return captions


def _run_task(task: _Task) -> list[tuple[str, str]]:
    return _write_train_shard(task) if task.split == "train" else _write_val_chunk(task)


def _tasks(out: Path, train: int, val: int, size: int, seed: int, shard_size: int, thing_colours: str) -> list[_Task]:
    tasks = [_Task(out, "train", seed, size, s, min(s + shard_size, train), k, thing_colours) for k, s in enumerate(range(0, train, shard_size))]
    tasks += [_Task(out, "val", seed, size, s, min(s + VAL_CHUNK, val), k, thing_colours) for k, s in enumerate(range(0, val, VAL_CHUNK))]
    return tasks


def _validate(train: int, val: int, size: int, seed: int, shard_size: int, workers: int, thing_colours: str) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} px, got {size}")
    if train < 0 or val < 0:
        raise ValueError(f"image counts must be >= 0, got train={train}, val={val}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_thing_colours(thing_colours)


def _prepare_dirs(out: Path) -> None:
    """Create the layout and remove files a previous run may have left (stale shards/images)."""
    for sub in ("train", "val/images", *(f"val/masks/{name}" for name in LABEL_SETS)):
        (out / sub).mkdir(parents=True, exist_ok=True)
    stale = [*(out / "train").glob("shard-*.tar"), *(out / "val/images").glob("*.jpg"), *(out / "val/masks").glob("*/*.png")]
    for path in stale:
        path.unlink()


def _check_out(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to write into a file, or into a non-empty folder that is not a synthetic world of the same `settings`
    (writing removes its shards and validation images), unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    try:
        recorded = json.loads((out / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and all(recorded.get(key) == value for key, value in settings.items()):
        return  # the same world again: rewritten byte for byte
    what = ("holds a synthetic world of other settings (" + ", ".join(
        f"{key} {recorded.get(key)!r} -> {value!r}" for key, value in settings.items() if recorded.get(key) != value)
        + ")") if isinstance(recorded, dict) else "is not empty and holds no synthetic world"
    raise FileExistsError(f"{out} {what}; writing there would delete its shards and validation images: choose an "
                          "empty --out, or pass --overwrite")


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_synthetic_world(
    out: Path, train: int, val: int, size: int = 64, seed: int = 0, shard_size: int = 1000, workers: int | None = None,
    thing_colours: str = DEFAULT_THING_COLOURS, overwrite: bool = False, show_progress: bool = True,
) -> dict:
    """Write train WebDataset shards (jpg+txt only) and a val split with masks; return a summary. `thing_colours`:
    "by-class" (the default world) or "free" (see `icons.thing_palette`). A non-empty `out` must hold a world of the
    same settings unless `overwrite` (its shards and validation images are replaced). `show_progress`: a bar of the
    images written."""
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    _validate(train, val, size, seed, shard_size, workers, thing_colours)
    out = Path(out)
    _check_out(out, {"generator": GENERATOR, "version": VERSION, "seed": seed, "size": size,
                     "thing_colours": thing_colours, "counts": {"train": train, "val": val},
                     "shard_size": shard_size}, overwrite)
    t0 = time.perf_counter()
    _prepare_dirs(out)
    tasks = _tasks(out, train, val, size, seed, shard_size, thing_colours)
    description = f"synthetic world: {train} training + {val} validation images"
    processes = min(workers, len(tasks))
    with PhaseProgress(description, train + val, show_progress) as progress, \
            (multiprocessing.Pool(processes) if processes > 1 else nullcontext()) as pool:
        done = pool.imap(_run_task, tasks) if pool is not None else map(_run_task, tasks)
        results = []
        for task, result in zip(tasks, done):
            results.append(result)
            progress.advance(task.stop - task.start)
    with (out / "val" / "captions.jsonl").open("w", encoding="utf-8") as f:
        for key, caption in (kc for r in results for kc in r):
            f.write(json.dumps({"key": key, "caption": caption}) + "\n")
    _write_json(out / "val" / "classes.json", {
        "label_sets": {k: list(v) for k, v in LABEL_SETS.items()},
        "background_words": {"objects": list(STUFF)},
        "ignore_index": IGNORE_INDEX,
    })
    _write_json(out / "world.json", {
        "generator": GENERATOR, "version": VERSION, "seed": seed, "size": size, "thing_colours": thing_colours,
        "counts": {"train": train, "val": val}, "shard_size": shard_size,
        "things": list(THINGS), "stuff": list(STUFF),
    })
    shards = sorted(str(p) for p in (out / "train").glob("shard-*.tar"))
    return {"out": str(out), "train": train, "val": val, "size": size, "seed": seed, "thing_colours": thing_colours,
            "train_shards": shards, "val_dir": str(out / "val"), "seconds": round(time.perf_counter() - t0, 3)}
