import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mixreorg_edge.cli import app
from mixreorg_edge.data.shards import ImageTextShards
from mixreorg_edge.distill.targets import cache_key, teacher_targets
from mixreorg_edge.distill.train import DistillConfig, distill
from mixreorg_edge.checkpoint import load_model_state, save_model
from mixreorg_edge.runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, load_model
from mixreorg_edge.training import TrainConfig

runner = CliRunner()
STUDENT = "mobilenetv4"  # the fastest family at tiny sizes


def _train_cfg(steps: int) -> TrainConfig:
    return TrainConfig(batch_size=16, lr=3e-3, warmup_steps=2, steps=steps, save_every=100, log_every=1, seed=0)


def test_distillation_loss_falls(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    result = distill(tiny_teacher_run, STUDENT, tiny_world, tmp_path / "student", _train_cfg(25),
                     DistillConfig(images=32), cache_dir=tmp_path / "cache", show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "student" / METRICS_FILE).read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert result.steps == 25
    assert last["feature"] < first["feature"] and last["loss"] < first["loss"]
    model, config = load_model(tmp_path / "student")
    assert config["kind"] == "student" and model.embed_dim == 32


def test_resumed_distillation_reproduces_the_uninterrupted_loss_curve(tiny_world: Path, tiny_teacher_run: Path,
                                                                     tmp_path: Path) -> None:
    """The first run computes the teacher targets, the resumed one loads them from the cache: both must train on
    the same values in the same layout (a channels-last copy rounded differently on an AVX-512 host)."""
    cfg = _train_cfg(6)
    cfg.save_every = 3
    kwargs = {"distill_cfg": DistillConfig(images=32), "cache_dir": tmp_path / "cache", "show_progress": False}
    distill(tiny_teacher_run, "mobilevit:xxs", tiny_world, tmp_path / "a", cfg, **kwargs)
    distill(tiny_teacher_run, "mobilevit:xxs", tiny_world, tmp_path / "b", cfg, stop_after=3, **kwargs)
    distill(tiny_teacher_run, "mobilevit:xxs", tiny_world, tmp_path / "b", cfg, resume=True, **kwargs)

    def losses(run: Path) -> list[tuple[int, float]]:
        rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
        return [(row["step"], row["loss"]) for row in rows]

    assert len(losses(tmp_path / "a")) == 6 and losses(tmp_path / "a") == losses(tmp_path / "b")


def test_distill_cli_records_its_seed(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_run, teacher)  # its target cache is written next to it
    result = runner.invoke(app, ["distill", "--teacher", str(teacher), "--student", STUDENT, "--data", str(tiny_world),
                                 "--out", str(tmp_path / "student"), "--steps", "2", "--batch-size", "8",
                                 "--images", "16", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "student" / CONFIG_FILE).read_text())["train"]["seed"] == 5


def _image_only_shards(world: Path, out: Path) -> Path:
    """The world's first shard without its captions."""
    out.mkdir()
    source = sorted((world / "train").glob("*.tar"))[0]
    with tarfile.open(source) as src, tarfile.open(out / "shard-000000.tar", "w") as dst:
        for member in src:
            if member.name.endswith(".jpg"):
                dst.addfile(member, src.extractfile(member))
    return out


def test_image_only_shards_need_a_class_vocabulary_and_distil_with_one(tiny_world: Path, tiny_teacher_run: Path,
                                                                      tmp_path: Path) -> None:
    images = _image_only_shards(tiny_world, tmp_path / "images")
    args = ["distill", "--teacher", str(tiny_teacher_run), "--student", STUDENT, "--data", str(images), "--steps", "1",
            "--batch-size", "8", "--images", "16", "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--vocabulary" in result.output
    assert not (tmp_path / "cache").exists()  # refused before the teacher's targets were computed
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--vocabulary", "car,tree,sky"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "b" / CONFIG_FILE).read_text())
    assert config["distill"]["vocabulary"] == "car,tree,sky"
    assert Path(config["teacher_run"]).is_absolute() and Path(config["data"]).is_absolute()
    assert config["student"]["student"] == "mobilenetv4:conv_small"  # the family's default size, named


@pytest.mark.parametrize("option", [["--images", "0"], ["--temperature", "0"], ["--steps", "0"],
                                    ["--feature-weight", "0", "--logit-weight", "0"]])
def test_settings_that_cannot_train_are_refused_before_any_work(option: list[str], tiny_world: Path,
                                                                tiny_teacher_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["distill", "--teacher", str(tiny_teacher_run), "--student", STUDENT, "--data",
                                 str(tiny_world), "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c"),
                                 *option])
    assert result.exit_code == 2 and "error" in result.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


def test_a_cache_dir_that_cannot_be_made_is_a_clear_error(tiny_world: Path, tiny_teacher_run: Path,
                                                         tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    result = runner.invoke(app, ["distill", "--teacher", str(tiny_teacher_run), "--student", STUDENT, "--data",
                                 str(tiny_world), "--out", str(tmp_path / "s"), "--steps", "1", "--images", "8",
                                 "--cache-dir", str(tmp_path / "a_file" / "cache")])
    assert result.exit_code == 2 and "--cache-dir" in result.output


def test_resume_refuses_another_teacher(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    kwargs = {"distill_cfg": DistillConfig(images=16), "cache_dir": tmp_path / "cache", "show_progress": False}
    distill(tiny_teacher_run, STUDENT, tiny_world, tmp_path / "s", _train_cfg(4), stop_after=2, **kwargs)
    other = tmp_path / "other"
    shutil.copytree(tiny_teacher_run, other)
    model, config = load_model(other)
    with torch.no_grad():
        model.logit_scale.add_(0.1)
    save_model(model, other / MODEL_FILE, config)
    with pytest.raises(ValueError, match="not the teacher"):
        distill(other, STUDENT, tiny_world, tmp_path / "s", _train_cfg(4), resume=True, **kwargs)


def test_distill_cli_caches_targets_where_told(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_run, teacher)
    args = ["distill", "--teacher", str(teacher), "--student", STUDENT, "--data", str(tiny_world), "--steps", "1",
            "--batch-size", "8", "--images", "16", "--cache-dir", str(tmp_path / "targets")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    assert "targets computed" in result.output
    assert len(list((tmp_path / "targets").glob("targets-*.safetensors"))) == 1
    assert not (teacher / "cache").exists()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0 and "targets reused" in result.output, result.output


def test_corrupt_jpeg_is_skipped_and_counted_by_distill(tiny_world: Path, tiny_teacher_run: Path,
                                                        tmp_path: Path) -> None:
    from conftest import shards_with_a_corrupt_jpeg

    shards = shards_with_a_corrupt_jpeg(tiny_world, tmp_path / "shards", "aa-corrupt.tar")  # read first
    result = runner.invoke(app, ["distill", "--teacher", str(tiny_teacher_run), "--student", STUDENT, "--data",
                                 str(shards), "--steps", "1", "--batch-size", "8", "--images", "16", "--cache-dir",
                                 str(tmp_path / "targets"), "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    assert "1 corrupt images skipped" in " ".join(result.output.split())  # however rich wrapped the line
    rows = [json.loads(line) for line in (tmp_path / "student" / METRICS_FILE).read_text().splitlines()]
    assert rows[-1]["corrupt_images"] == 1


def test_teacher_target_cache_is_reused_and_invalidated(tiny_world: Path, tiny_teacher_run: Path,
                                                        tmp_path: Path) -> None:
    teacher, _ = load_model(tiny_teacher_run)
    shards = ImageTextShards(tiny_world)
    first = teacher_targets(teacher, shards, 8, 32, "hflip", tmp_path)
    again = teacher_targets(teacher, shards, 8, 32, "hflip", tmp_path)
    assert not first.reused and again.reused and again.path == first.path
    assert torch.equal(first.embeddings, again.embeddings) and len(first.images) == 16  # both orientations
    assert first.embeddings.stride() == again.embeddings.stride()  # computed and loaded targets round alike
    other_augment = teacher_targets(teacher, shards, 8, 32, "none", tmp_path)
    assert not other_augment.reused and other_augment.path != first.path
    key = cache_key(teacher, shards, 8, 32, "hflip")
    teacher.cfg.readout = "token"  # (the key only: this tiny teacher has no token-readout layers to run)
    assert cache_key(teacher, shards, 8, 32, "hflip") != key
    teacher.cfg.readout = "group"
    with torch.no_grad():
        teacher.image_proj.fc1.weight.add_(0.01)  # a changed teacher
    changed = teacher_targets(teacher, shards, 8, 32, "hflip", tmp_path)
    assert not changed.reused and changed.path != first.path
    for shard in shards.shards:  # the images regenerated in place (a tar's size often stays the same)
        stat = shard.stat()
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    regenerated = teacher_targets(teacher, shards, 8, 32, "hflip", tmp_path)
    assert not regenerated.reused and regenerated.path != changed.path


def test_eval_and_segment_accept_a_student(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    distill(tiny_teacher_run, STUDENT, tiny_world, tmp_path / "student", _train_cfg(2), DistillConfig(images=16),
            cache_dir=tmp_path / "cache", show_progress=False)
    result = runner.invoke(app, ["eval", "--model", str(tmp_path / "student"), "--data", str(tiny_world / "val"),
                                 "--json", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "scores.json").read_text())["num_images"] == 6
    image = tmp_path / "odd.jpg"
    Image.new("RGB", (50, 37), (30, 120, 200)).save(image)
    segment = ["segment", "--model", str(tmp_path / "student"), "--image", str(image),
               "--out", str(tmp_path / "seg.png")]
    result = runner.invoke(app, [*segment, "--classes", "background,car,tree"])
    assert result.exit_code == 2 and "background words" in result.output  # no words, no threshold
    result = runner.invoke(app, [*segment, "--classes", "car,tree"])
    assert result.exit_code == 0, result.output
    overlay = Image.open(tmp_path / "seg.png")  # enlarged 7x for display (37 -> 259 px), the legend to its right
    assert overlay.height == 37 * 7 and overlay.width > 50 * 7


def test_student_eval_needs_its_own_teacher(tiny_world: Path, tiny_teacher_run: Path, tmp_path: Path) -> None:
    """A student's class names are embedded by its teacher: a missing or different teacher is a clear error."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher_run, teacher)
    distill(teacher, STUDENT, tiny_world, tmp_path / "student", _train_cfg(1), DistillConfig(images=16),
            cache_dir=tmp_path / "cache", show_progress=False)
    other, _ = load_model(teacher)
    with torch.no_grad():
        other.text_proj.fc1.weight.add_(1.0)
    save_model(other, teacher / MODEL_FILE, load_model_state(teacher / MODEL_FILE)[1])
    args = ["eval", "--model", str(tmp_path / "student"), "--data", str(tiny_world / "val")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not the teacher this student was distilled from" in result.output
    shutil.rmtree(teacher)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "teacher" in result.output and "missing" in result.output


def test_segment_with_a_vocabulary_file(tiny_teacher_run: Path, tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.safetensors"
    result = runner.invoke(app, ["vocab", "build", "--teacher", str(tiny_teacher_run), "--classes",
                                 "synthetic-objects", "--out", str(vocab)])
    assert result.exit_code == 0, result.output
    image = tmp_path / "img.png"
    Image.new("RGB", (70, 90), (200, 180, 40)).save(image)
    result = runner.invoke(app, ["segment", "--model", str(tiny_teacher_run), "--image", str(image),
                                 "--vocab", str(vocab), "--out", str(tmp_path / "seg.png")])
    assert result.exit_code == 0, result.output
    overlay = Image.open(tmp_path / "seg.png")
    assert overlay.height == 90 * 4 and overlay.width > 70 * 4  # enlarged 4x for display, the legend beside


@pytest.mark.parametrize(
    "args,message",
    [
        (["distill", "--teacher", "{run}", "--student", "blob", "--data", "{world}", "--out", "{tmp}/s"], "mobilevit"),
        (["distill", "--teacher", "{tmp}/none", "--student", "mobilevit", "--data", "{world}", "--out", "{tmp}/s"],
         "no trained model"),
        (["segment", "--model", "{run}", "--image", "{tmp}/broken.jpg", "--classes", "a,b", "--out", "{tmp}/o.png"],
         "cannot read image"),
        (["segment", "--model", "{run}", "--image", "{tmp}/absent.jpg", "--classes", "a,b", "--out", "{tmp}/o.png"],
         "not found"),
    ],
)
def test_bad_input_exits_non_zero_with_a_clear_message(args: list[str], message: str, tiny_world: Path,
                                                      tiny_teacher_run: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    filled = [a.format(run=tiny_teacher_run, world=tiny_world, tmp=tmp_path) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2
    assert message in result.output


def test_distill_warns_about_a_truncated_shard_and_records_the_images_it_used(tiny_world: Path,
                                                                               tiny_teacher_run: Path,
                                                                               tmp_path: Path) -> None:
    """distill said nothing of a cut shard, and capped --images at the data's size while config.json recorded the
    number asked for."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for source in sorted((tiny_world / "train").glob("*.tar")):
        (shards / source.name).write_bytes(source.read_bytes())
    cut = sorted(shards.glob("*.tar"))[-1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 5])
    available = len(ImageTextShards(shards, require_caption=False))
    result = runner.invoke(app, ["distill", "--teacher", str(tiny_teacher_run), "--student", STUDENT, "--data",
                                 str(shards), "--steps", "1", "--batch-size", "8", "--images", "1000", "--cache-dir",
                                 str(tmp_path / "targets"), "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "1 shard(s) end early" in output and f"the data holds {available} images" in output
    assert json.loads((tmp_path / "student" / CONFIG_FILE).read_text())["distill"]["images"] == available
    rows = [json.loads(line) for line in (tmp_path / "student" / METRICS_FILE).read_text().splitlines()]
    assert rows[-1]["truncated_shards"] == 1
