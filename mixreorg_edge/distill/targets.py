"""Teacher targets computed once and cached (the way MobileCLIP stores teacher outputs with its dataset).

The cache holds, for a fixed image set, the decoded images and the teacher's dense embeddings (fp16), in both
orientations when the augmentation is a horizontal flip, so every training view has an exact teacher target. Its
key covers the teacher's weights, the image set, the image size and the augmentation: change any and it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import atomic_save_safetensors, fingerprint
from ..data.shards import CorruptImageError, ImageTextShards, decode_image
from ..data.transforms import normalize_uint8
from ..progress import PhaseProgress

AUGMENTATIONS = ("none", "hflip")
CACHE_VERSION = 3  # 3: the key holds the teacher's dense readout (the group readout became one-hot)


@dataclass
class TeacherTargets:
    images: torch.Tensor  # (N, 3, S, S) uint8, every view (originals, then flips when augmented)
    embeddings: torch.Tensor  # (N, E, h, w) float16, the teacher's dense embeddings of each view
    path: Path
    reused: bool
    skipped: int  # undecodable images left out


def cache_key(teacher: torch.nn.Module, shards: ImageTextShards, count: int, image_size: int, augment: str) -> str:
    """A digest of everything the targets depend on."""
    # Size and modification time: a world regenerated in place often keeps its tar sizes (tar pads to 10 KiB).
    sources = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in shards.shards]
    spec = {
        "version": CACHE_VERSION,
        "teacher": fingerprint(teacher),
        "readout": teacher.cfg.readout,  # the same weights give other targets under another readout
        "shards": sources,
        "count": count,
        "image_size": image_size,
        "augment": augment,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _decode_first(
    shards: ImageTextShards, count: int, image_size: int, show_progress: bool = False
) -> tuple[torch.Tensor, int]:
    """The first `count` decodable images of the shards (undecodable ones are skipped and counted)."""
    images, skipped = [], 0
    with PhaseProgress(f"teacher targets: decoding {count} images", count, show_progress) as progress:
        for index in range(len(shards)):
            if len(images) == count:
                break
            try:
                images.append(decode_image(shards.read(index)[0], image_size))
                progress.advance()
            except CorruptImageError:
                skipped += 1
    if not images:
        raise ValueError("no decodable image to distil on")
    return torch.stack(images), skipped


@torch.no_grad()
def _teacher_embeddings(
    teacher: torch.nn.Module, images: torch.Tensor, batch: int = 64, show_progress: bool = False
) -> torch.Tensor:
    """The teacher's dense embeddings (fp16, on the CPU) of uint8 images, `batch` at a time."""
    teacher.eval()
    device = next(teacher.parameters()).device
    chunks = []
    with PhaseProgress(f"teacher targets: embedding {len(images)} views", len(images), show_progress) as progress:
        for i in range(0, len(images), batch):
            chunks.append(teacher.encode_dense(normalize_uint8(images[i : i + batch].to(device))).half().cpu())
            progress.advance(len(chunks[-1]))
    # Contiguous, as the cache file gives them back: training on a computed (strided) or a loaded copy must round
    # alike, or a run that built the cache and one that resumed from it would diverge.
    return torch.cat(chunks).contiguous()


def teacher_targets(
    teacher: torch.nn.Module,
    shards: ImageTextShards,
    count: int,
    image_size: int,
    augment: str,
    cache_dir: Path,
    show_progress: bool = False,
) -> TeacherTargets:
    """Load the cached targets for this (teacher, images, size, augmentation), or compute and cache them (with a bar
    for the decoding and one for the teacher's embeddings when `show_progress`)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    path = Path(cache_dir) / f"targets-{cache_key(teacher, shards, count, image_size, augment)}.safetensors"
    if path.is_file():
        cached = load_file(path)
        return TeacherTargets(cached["images"], cached["embeddings"], path, True, int(cached["skipped"]))
    images, skipped = _decode_first(shards, count, image_size, show_progress)
    if augment == "hflip":
        images = torch.cat([images, images.flip(-1)])
    embeddings = _teacher_embeddings(teacher, images, show_progress=show_progress)
    atomic_save_safetensors(
        {"images": images, "embeddings": embeddings, "skipped": torch.tensor(skipped)},
        path,
        metadata={"augment": augment, "image_size": str(image_size), "count": str(count)},
    )
    return TeacherTargets(images, embeddings, path, False, skipped)
