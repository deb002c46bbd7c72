"""Random-access image-caption data from WebDataset tar shards.

Shards are plain (uncompressed) tar files whose members are named ``{key}.{ext}``
as img2dataset writes them. A sample is usable when it has an image
(``jpg``/``jpeg``/``png``) and a caption (``txt``). The index stores the byte
offset of each member so any sample can be read by seeking, which makes the
batch for a training step a pure function of ``(seed, step)`` and resumption exact.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from webdataset.shardlists import expand_urls

from .transforms import to_rgb8

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
CAPTION_EXTENSION = "txt"
# WebDataset convention: the key is everything up to the first dot of the base name.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


class ShardIndexError(RuntimeError):
    """Shards are missing, unreadable, or hold no usable sample."""


class CorruptImageError(ValueError):
    """Image bytes could not be decoded."""


def find_shards(data: Path | str) -> list[Path]:
    """The shards `data` names: a shard, a folder (``data/*.tar`` or else ``data/train/*.tar``, sorted), a brace
    pattern (``/data/cc12m/{00000..01242}.tar``, webdataset's convention) or a text file listing one shard a line
    (relative paths from the list's folder; blank and ``#`` lines skipped). A pattern or list may name shards that
    are missing: ImageTextShards reports and skips those."""
    text = str(data)
    if "{" in text and not Path(text).exists():
        return [Path(name) for name in expand_urls(text)]
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"data directory not found: {data}")
    if data.is_file():
        return [data] if data.suffix == ".tar" else _listed_shards(data)
    for folder in (data, data / "train"):
        shards = sorted(p for p in folder.glob("*.tar") if p.is_file())
        if shards:
            return shards
    raise ShardIndexError(f"no .tar shards found in {data} or {data / 'train'}")


def _listed_shards(listing: Path) -> list[Path]:
    """The shards a text file lists, one a line."""
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ShardIndexError(f"not a .tar shard nor a readable list of shards: {listing} ({err})") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ShardIndexError(f"the shard list {listing} names no shard")
    return [listing.parent / name for name in names]


def default_bad_shard_limit(shards: int) -> int:
    """How many missing or unreadable shards a run tolerates by default: 1 % of those named (none of fewer than 100)."""
    return shards // 100


def _scan_members(path: Path) -> tuple[dict[str, dict[str, tuple[int, int]]], bool]:
    """Map each key to ``{extension: (data offset, size)}``; the flag says the shard is truncated.

    A truncated shard is indexed up to its last complete member.
    """
    members: dict[str, dict[str, tuple[int, int]]] = {}
    file_size = path.stat().st_size
    try:
        tar = tarfile.open(path, mode="r:")
    except tarfile.TarError as err:
        raise ShardIndexError(f"cannot read shard {path}: {err}") from err
    with tar:
        try:
            for info in tar:
                if info.offset_data + info.size > file_size:
                    return members, True
                match = _MEMBER_NAME.match(info.name)
                if info.isfile() and match is not None:
                    members.setdefault(match.group(1), {})[match.group(2).lower()] = (info.offset_data, info.size)
        except tarfile.ReadError:
            return members, True
        # tarfile stops silently at a cut header or a missing end-of-archive block.
        return members, file_size - tar.offset < tarfile.BLOCKSIZE


def _complete_samples(
    members: dict[str, dict[str, tuple[int, int]]], require_caption: bool
) -> list[tuple[int, int, int, int]]:
    """``(image_offset, image_size, caption_offset, caption_size)`` of samples with an image (and a caption, when
    required; an absent caption reads as empty)."""
    samples = []
    for parts in members.values():
        image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
        caption = parts.get(CAPTION_EXTENSION, None if require_caption else (0, 0))
        if image is not None and caption is not None:
            samples.append((*image, *caption))
    return samples


class ImageTextShards:
    """Random-access view over WebDataset shards (an index of member offsets built by scanning tar headers with `tarfile`).

    ``incomplete`` counts keys lacking an image or a caption; ``truncated_shards`` lists
    shards that end early (their complete members are still used). With ``require_caption=False`` (distillation
    needs images only) samples without a caption are kept. Shards that are missing or unreadable are skipped and
    listed in ``bad_shards`` (path, reason), up to ``max_bad_shards`` (default: `default_bad_shard_limit`); beyond
    that the index fails. ``shards`` holds the shards read.
    """

    def __init__(self, data: Path | str, require_caption: bool = True, max_bad_shards: int | None = None) -> None:
        named = find_shards(data)
        limit = default_bad_shard_limit(len(named)) if max_bad_shards is None else max_bad_shards
        self.shards: list[Path] = []
        self.bad_shards: list[tuple[Path, str]] = []
        self.incomplete = 0
        self.truncated_shards: list[Path] = []
        shard_ids: list[int] = []
        rows: list[tuple[int, int, int, int]] = []
        for path in named:
            try:
                members, truncated = _scan_members(path)
            except (OSError, ShardIndexError) as err:
                self.bad_shards.append((path, getattr(err, "strerror", None) or str(err)))
                if len(self.bad_shards) > limit:
                    raise ShardIndexError(_bad_shards_message(self.bad_shards, len(named), limit)) from None
                continue
            if truncated:
                self.truncated_shards.append(path)
            samples = _complete_samples(members, require_caption)
            self.incomplete += len(members) - len(samples)
            shard_ids.extend([len(self.shards)] * len(samples))
            self.shards.append(path)
            rows.extend(samples)
        if not rows:
            raise ShardIndexError(
                f"no complete image+caption samples in {len(named)} shard(s) under {data} "
                f"({self.incomplete} incomplete, {len(self.bad_shards)} missing or unreadable)"
            )
        self._shard = np.asarray(shard_ids, dtype=np.int32)
        self._offsets = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._shard)

    def read(self, index: int) -> tuple[bytes, str]:
        """Return the raw image bytes and the stripped caption of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        image_offset, image_size, caption_offset, caption_size = (int(v) for v in self._offsets[index])
        with open(self.shards[self._shard[index]], "rb") as f:
            f.seek(image_offset)
            image = f.read(image_size)
            f.seek(caption_offset)
            caption = f.read(caption_size)
        return image, caption.decode("utf-8", errors="replace").strip()

    def captions(self, indices: Iterable[int]) -> Iterator[str]:
        """The stripped captions of samples `indices`, in that order, reading the caption members only (each shard
        is opened once per run of consecutive indices in it: give them sorted)."""
        handle, open_shard = None, -1
        try:
            for index in indices:
                shard = int(self._shard[index])
                if shard != open_shard:
                    if handle is not None:
                        handle.close()
                    handle, open_shard = open(self.shards[shard], "rb"), shard
                _, _, offset, size = (int(v) for v in self._offsets[index])
                handle.seek(offset)
                yield handle.read(size).decode("utf-8", errors="replace").strip()
        finally:
            if handle is not None:
                handle.close()


def _bad_shards_message(bad: list[tuple[Path, str]], named: int, limit: int) -> str:
    listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:3])
    return (f"more than {limit} of {named} shards are missing or unreadable (--max-bad-shards): {listed}"
            + (" ..." if len(bad) > 3 else ""))


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Decode image bytes to a uint8 RGB tensor (3, size, size): short side resized to ``size``, then center crop."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers `size`
            img.load()
            rgb = to_rgb8(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot decode image ({len(data)} bytes): {err}") from err
    return torch.from_numpy(np.array(_resize_center_crop(rgb, size))).permute(2, 0, 1).contiguous()


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def step_generator(tag: str, seed: int, n: int) -> torch.Generator:
    """A generator whose seed is a hash of ``(tag, seed, n)``, so streams are independent."""
    digest = hashlib.blake2b(f"{tag}:{seed}:{n}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class CaptionBatches:
    """Deterministic batches: batch(step) is a pure function of (seed, step, rank). `prefetched(step)` gives the same
    batch while the next one is decoded in a background thread (call `close()` when done).

    Under data parallelism a step's global batch is the `batch_size x world_size` next positions of the epoch's
    permutation and rank r takes the r-th `batch_size` of them: the ranks read disjoint samples, together exactly
    the one-process batch of the global size, so a run resumes exactly with any number of ranks. (A corrupt sample
    is replaced by the positions after the rank's slice, which may repeat a neighbouring rank's sample.)"""

    def __init__(self, shards: ImageTextShards, batch_size: int, image_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if len(shards) < batch_size * world_size:
            raise ValueError(f"dataset has {len(shards)} samples, fewer than the batch size {batch_size * world_size}")
        self.shards = shards
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.image_size = image_size
        self.seed = seed
        self.corrupt = 0
        self.corrupt_indices: set[int] = set()
        self._orders: dict[int, torch.Tensor] = {}
        self._corrupt_lock = threading.Lock()  # the prefetch thread adds corrupt samples while a checkpoint reads them
        self._prefetcher: ThreadPoolExecutor | None = None
        self._pending: tuple[int, Future] | None = None

    def state_dict(self) -> dict[str, list[int]]:
        """What a resumed run needs besides the step: the corrupt samples met so far (batches do not depend on it,
        the `corrupt` count does)."""
        with self._corrupt_lock:
            return {"corrupt_indices": sorted(self.corrupt_indices)}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        with self._corrupt_lock:
            self.corrupt_indices = set(state["corrupt_indices"])
            self.corrupt = len(self.corrupt_indices)

    @staticmethod
    def merge_state_dicts(states: list[dict[str, list[int]]]) -> dict[str, list[int]]:
        """One state from every rank's: the corrupt samples any rank met."""
        return {"corrupt_indices": sorted({index for state in states for index in state["corrupt_indices"]})}

    def note_corrupt(self, indices: Iterable[int]) -> None:
        """Count corrupt samples met elsewhere (in a DataLoader worker)."""
        with self._corrupt_lock:
            self.corrupt_indices.update(indices)
            self.corrupt = len(self.corrupt_indices)

    def _order(self, epoch: int) -> torch.Tensor:
        """The sample permutation of ``epoch`` (the last two are cached)."""
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                del self._orders[min(self._orders)]
            self._orders[epoch] = torch.randperm(len(self.shards), generator=step_generator("epoch", self.seed, epoch))
        return self._orders[epoch]

    def _sample_at(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.shards))
        return int(self._order(epoch)[offset])

    def _decode(self, index: int) -> tuple[torch.Tensor, str] | None:
        """Decode sample ``index``; None (and counted once) when its image is corrupt."""
        if index in self.corrupt_indices:
            return None
        image_bytes, caption = self.shards.read(index)
        try:
            return decode_image(image_bytes, self.image_size), caption
        except CorruptImageError:
            with self._corrupt_lock:
                self.corrupt_indices.add(index)
                self.corrupt = len(self.corrupt_indices)
            if self.corrupt == len(self.shards):
                raise ShardIndexError(f"all {self.corrupt} samples have undecodable images") from None
            return None

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """Images uint8 (B, 3, S, S) and captions for ``step``; corrupt samples are replaced by the next positions."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        images: list[torch.Tensor] = []
        captions: list[str] = []
        start = self.rank * self.batch_size
        position = step * self.batch_size * self.world_size + start
        while len(images) < self.batch_size:
            sample = self._decode(self._sample_at(position))
            position += 1
            if sample is not None:
                images.append(sample[0])
                captions.append(sample[1])
        flips = torch.rand(self.batch_size * self.world_size, generator=step_generator("flip", self.seed, step)) < 0.5
        flips = flips[start:start + self.batch_size]
        stacked = torch.stack(images)
        stacked[flips] = stacked[flips].flip(-1)
        return stacked, captions

    def prefetched(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """`batch(step)`, decoded in the background during the previous call when that asked for `step - 1`; starts
        decoding `step + 1` before returning. Decoding overlaps the training step (PIL releases the GIL)."""
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-batches")
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == step:
            result = pending[1].result()
        else:
            if pending is not None:
                wait([pending[1]])  # one decoder at a time (batch() is not re-entrant); its batch is not needed
            result = self.batch(step)
        self._pending = (step + 1, self._prefetcher.submit(self.batch, step + 1))
        return result

    def close(self) -> None:
        """Stop the prefetch thread (after the batch it is decoding)."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True, cancel_futures=True)
            self._prefetcher, self._pending = None, None
