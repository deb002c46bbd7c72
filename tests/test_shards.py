"""WebDataset shard indexing, image decoding and deterministic caption batches."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from mixreorg_edge.data.shards import (
    CaptionBatches,
    CorruptImageError,
    ImageTextShards,
    ShardIndexError,
    decode_image,
    find_shards,
)

SIZE = 16


def _jpeg(i: int, width: int = 40, height: int = 30) -> bytes:
    img = Image.new("RGB", (width, height), ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256))
    img.paste((255, 255, 255), (0, 0, width // 3, height))  # asymmetric, so a flip is visible
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_shard(path: Path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def _samples(start: int, n: int) -> list[dict]:
    return [{"__key__": f"{i:06d}", "jpg": _jpeg(i), "txt": f"  caption {i}\n"} for i in range(start, start + n)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    _write_shard(tmp_path / "00000.tar", _samples(0, 6))
    _write_shard(tmp_path / "00001.tar", _samples(6, 6))
    return tmp_path


def test_find_shards_layouts_and_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        find_shards(tmp_path / "missing")
    with pytest.raises(ShardIndexError, match="no .tar shards"):
        find_shards(tmp_path)
    with pytest.raises(ShardIndexError):
        ImageTextShards(tmp_path)
    (tmp_path / "train").mkdir()
    _write_shard(tmp_path / "train" / "b.tar", _samples(0, 1))
    _write_shard(tmp_path / "train" / "a.tar", _samples(1, 1))
    assert find_shards(tmp_path) == [tmp_path / "train" / "a.tar", tmp_path / "train" / "b.tar"]
    assert find_shards(tmp_path / "train" / "a.tar") == [tmp_path / "train" / "a.tar"]


def test_index_and_read_round_trip(data: Path) -> None:
    shards = ImageTextShards(data)
    assert len(shards) == 12 and shards.incomplete == 0 and shards.truncated_shards == []
    captions = set()
    for i in range(len(shards)):
        image, caption = shards.read(i)
        captions.add(caption)
        number = int(caption.split()[1])
        assert image == _jpeg(number)
    assert captions == {f"caption {i}" for i in range(12)}
    with pytest.raises(IndexError):
        shards.read(12)


def test_incomplete_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    samples = _samples(0, 3) + [{"__key__": "only_image", "png": _jpeg(9)}, {"__key__": "only_text", "txt": "x"}]
    _write_shard(tmp_path / "s.tar", samples)
    shards = ImageTextShards(tmp_path)
    assert (len(shards), shards.incomplete) == (3, 2)


def test_decode_image_resizes_and_rejects_corrupt_bytes() -> None:
    image = decode_image(_jpeg(3, width=64, height=32), SIZE)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
    truncated = _jpeg(3)[:200]
    for bad in (truncated, b"not an image"):
        with pytest.raises(CorruptImageError):
            decode_image(bad, SIZE)


def test_decode_image_scales_a_16_bit_grayscale_png() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), 128 * 257, np.uint16)).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue(), SIZE)
    assert (image == 128).all()  # scaled to 8 bits, not clipped white


def test_batch_is_pure_function_of_seed_and_step(data: Path) -> None:
    shards = ImageTextShards(data)
    a = CaptionBatches(shards, batch_size=4, image_size=SIZE, seed=7)
    b = CaptionBatches(shards, batch_size=4, image_size=SIZE, seed=7)
    a.batch(5)  # history must not matter
    images_a, captions_a = a.batch(2)
    images_b, captions_b = b.batch(2)
    assert torch.equal(images_a, images_b) and captions_a == captions_b
    assert images_a.shape == (4, 3, SIZE, SIZE) and images_a.dtype == torch.uint8
    assert a.batch(3)[1] != captions_a
    assert CaptionBatches(shards, 4, SIZE, seed=8).batch(2)[1] != captions_a


def test_each_epoch_visits_every_sample_once_with_flips(data: Path) -> None:
    shards = ImageTextShards(data)
    batches = CaptionBatches(shards, batch_size=4, image_size=SIZE, seed=0)
    flipped = []
    for epoch in range(2):
        seen = []
        for step in range(epoch * 3, epoch * 3 + 3):
            images, captions = batches.batch(step)
            for image, caption in zip(images, captions):
                plain = decode_image(_jpeg(int(caption.split()[1])), SIZE)
                assert torch.equal(image, plain) or torch.equal(image, plain.flip(-1))
                flipped.append(not torch.equal(image, plain))
            seen += captions
        assert sorted(seen) == sorted(f"caption {i}" for i in range(12))
    assert any(flipped) and not all(flipped)


def test_corrupt_image_is_skipped_and_counted(tmp_path: Path) -> None:
    samples = _samples(0, 10)
    samples[3]["jpg"] = samples[3]["jpg"][:150]  # truncated JPEG
    _write_shard(tmp_path / "s.tar", samples)
    batches = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    for step in range(6):  # 24 positions: the corrupt sample is met at least twice
        images, captions = batches.batch(step)
        assert images.shape[0] == len(captions) == 4
        assert "caption 3" not in captions
    assert batches.corrupt == 1 and len(batches.corrupt_indices) == 1
    fresh = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    assert fresh.batch(4)[1] == batches.batch(4)[1]


def test_prefetched_batches_equal_direct_ones_in_any_order(tmp_path: Path) -> None:
    samples = _samples(0, 10)
    samples[3]["jpg"] = samples[3]["jpg"][:150]  # truncated JPEG: counted once, whichever thread meets it
    _write_shard(tmp_path / "s.tar", samples)
    direct = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    prefetched = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    try:
        for step in (0, 1, 2, 5, 6, 2, 3):  # in order (served by the prefetch), then jumps (a resume, a retry)
            images, captions = prefetched.prefetched(step)
            expected_images, expected_captions = direct.batch(step)
            assert torch.equal(images, expected_images) and captions == expected_captions
        assert prefetched.state_dict() == direct.state_dict() == {"corrupt_indices": [3]}
    finally:
        prefetched.close()
    assert prefetched.corrupt == 1


def test_all_corrupt_and_too_small_datasets_fail_clearly(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        for i in range(3):
            for ext, payload in (("jpg", b"garbage"), ("txt", b"c")):
                info = tarfile.TarInfo(f"{i:03d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    shards = ImageTextShards(tmp_path)
    with pytest.raises(ValueError, match="fewer than the batch size"):
        CaptionBatches(shards, batch_size=4, image_size=SIZE, seed=0)
    with pytest.raises(ShardIndexError, match="undecodable"):
        CaptionBatches(shards, batch_size=2, image_size=SIZE, seed=0).batch(0)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7, 0.9])
def test_truncated_shard_keeps_its_complete_samples(tmp_path: Path, fraction: float) -> None:
    _write_shard(tmp_path / "a.tar", _samples(0, 4))
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[: int(len(data) * fraction)])
    _write_shard(tmp_path / "b.tar", _samples(4, 1))
    shards = ImageTextShards(tmp_path)
    assert shards.truncated_shards == [tmp_path / "a.tar"]
    assert 1 < len(shards) <= 5  # at 0.9 only the end-of-archive blocks are cut
    captions = [shards.read(i)[1] for i in range(len(shards))]
    assert captions == [f"caption {i}" for i in range(len(shards) - 1)] + ["caption 4"]


def test_data_is_a_brace_pattern_or_a_list_of_shards(data: Path) -> None:
    """`--data /data/cc12m/{00000..01242}.tar` (webdataset's convention) or a text file naming one shard a line."""
    pattern = find_shards(f"{data}/{{00000..00001}}.tar")
    assert pattern == [data / "00000.tar", data / "00001.tar"]
    listing = data / "shards.txt"
    listing.write_text("# the training shards\n00001.tar\n\n" + str(data / "00000.tar") + "\n")
    assert find_shards(listing) == [data / "00001.tar", data / "00000.tar"]
    assert len(ImageTextShards(f"{data}/{{00000..00001}}.tar")) == len(ImageTextShards(listing)) == 12
    listing.write_text("# nothing\n")
    with pytest.raises(ShardIndexError, match="names no shard"):
        find_shards(listing)


def test_missing_and_unreadable_shards_are_skipped_up_to_the_limit(data: Path) -> None:
    (data / "00002.tar").write_bytes(b"not a tar file at all" * 40)
    pattern = f"{data}/{{00000..00003}}.tar"  # 00003.tar does not exist
    shards = ImageTextShards(pattern, max_bad_shards=2)
    assert len(shards) == 12 and shards.shards == [data / "00000.tar", data / "00001.tar"]
    assert [path.name for path, _ in shards.bad_shards] == ["00002.tar", "00003.tar"]
    assert "No such file" in shards.bad_shards[1][1]
    with pytest.raises(ShardIndexError, match=r"more than 1 of 4 shards are missing or unreadable.*00003.tar"):
        ImageTextShards(pattern, max_bad_shards=1)
    with pytest.raises(ShardIndexError, match="more than 0 of 4"):  # the default: 1 % of the shards named
        ImageTextShards(pattern)


def test_ranks_read_disjoint_shares_of_the_one_process_batch(data: Path) -> None:
    shards = ImageTextShards(data)
    whole = CaptionBatches(shards, batch_size=4, image_size=SIZE, seed=3)
    ranks = [CaptionBatches(shards, batch_size=2, image_size=SIZE, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for step in range(5):  # across an epoch boundary (12 samples, 4 a step)
        images, captions = whole.batch(step)
        parts = [rank.batch(step) for rank in ranks]
        assert parts[0][1] + parts[1][1] == captions and not set(parts[0][1]) & set(parts[1][1])
        assert torch.equal(torch.cat([parts[0][0], parts[1][0]]), images)  # the same flips too


def test_worker_processes_decode_the_same_batches(tmp_path: Path) -> None:
    from mixreorg_edge.data.loader import WorkerBatches

    samples = _samples(0, 12)
    samples[5]["jpg"] = samples[5]["jpg"][:150]
    _write_shard(tmp_path / "s.tar", samples)
    direct = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    workers = CaptionBatches(ImageTextShards(tmp_path), batch_size=4, image_size=SIZE, seed=1)
    rng = torch.get_rng_state()
    with WorkerBatches(workers, start=2, workers=2) as loader:
        assert torch.equal(torch.get_rng_state(), rng)  # training's random draws are the same with workers as without
        for step in range(2, 8):
            expected, got = direct.batch(step), loader.batch(step)
            assert torch.equal(expected[0], got[0]) and expected[1] == got[1]
        assert workers.corrupt == direct.corrupt == 1  # met in a worker, counted here
        with pytest.raises(RuntimeError, match="asked for the batch of step 3"):
            loader.batch(3)
        processes = list(loader._batches._workers)
    assert not any(process.is_alive() for process in processes)  # closed: no worker left decoding
