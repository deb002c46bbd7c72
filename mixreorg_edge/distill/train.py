"""`distill`: teach a timm student the teacher's dense embeddings (feature distillation) and its per-location class
distribution over a distillation vocabulary (logit distillation). Images only: no masks, no captions needed. Under
torchrun each rank trains on its share of every global batch (bf16 autocast and channels-last on CUDA)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import fingerprint
from ..data.keywords import caption_words
from ..data.shards import ImageTextShards
from ..data.transforms import normalize_uint8
from ..distributed import on_main, process_group, world
from ..run_log import check_tensorboard
from ..runs import load_model, model_file
from ..training import (TrainConfig, TrainResult, channels_last, default_device, mixed_precision, prepare_run,
                        run_training)
from ..vocab import embed_class_names, get_templates, parse_classes, teacher_fingerprint
from .global_norm import normalise_across_ranks
from .losses import feature_loss, logit_loss
from .student import DenseStudent, StudentConfig
from .students import parse_student
from .targets import TeacherTargets, teacher_targets

@dataclass
class DistillConfig:
    """What is distilled and how. `vocabulary`: "captions" (the frequent words of the training captions) or a
    class spec (built-in name, file or "a,b,c") used as the logit-distillation vocabulary."""

    images: int = 20000  # the default world's whole training split; 4,096 overfit (see default_train_config)
    augment: str = "hflip"
    feature_weight: float = 1.0
    logit_weight: float = 1.0
    temperature: float = 2.0
    vocabulary: str = "captions"
    max_words: int = 256

    def validate(self) -> None:
        """Refuse settings that cannot train: no images, a non-positive temperature or weights that switch off both
        losses."""
        if self.images < 1:
            raise ValueError(f"--images must be at least 1, got {self.images}")
        if self.temperature <= 0:
            raise ValueError(f"the distillation temperature must be positive, got {self.temperature}")
        if self.feature_weight < 0 or self.logit_weight < 0 or self.feature_weight + self.logit_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got feature {self.feature_weight}, "
                             f"logit {self.logit_weight}")


def default_train_config() -> TrainConfig:
    """The budget of `distill` and the distillation benchmark: 4,000 steps of 64. Over 20,000 cached images
    MobileViT-XXS kept 96.2 % of the shipped teacher's `objects` mIoU (39.84) and 98.9 % of the one before (38.65),
    where 4,096 images gave 91.2 % of the latter (92.9 % after 8,000 steps); the quickstart uses a shorter budget to
    stay within its 10 minutes."""
    return TrainConfig(batch_size=64, lr=2e-3, warmup_steps=50, steps=4000, save_every=250, log_every=10)


def distillation_vocabulary(shards: ImageTextShards, cfg: DistillConfig) -> list[str]:
    """The words whose teacher distribution the student learns: the captions' frequent words or a class list."""
    if cfg.vocabulary == "captions":
        hint = 'pass --vocabulary with a class list (a built-in such as voc, a file or "a,b,c")'
        return caption_words(shards, max_words=cfg.max_words, needed_for=hint)
    label_set = parse_classes(cfg.vocabulary)
    return [name for name in label_set.classes if name != "background"] + label_set.background_words


def writable_cache_dir(path: Path) -> Path:
    """`path`, created if needed; a clear error, before minutes of work, where the targets could not be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the teacher-target cache {path} ({error.strerror}); choose one with "
                         "--cache-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"the teacher-target cache {path} is not writable; choose another with --cache-dir")
    return path


def _built_once(build: Callable[[], TeacherTargets]) -> TeacherTargets:
    """Rank 0 builds the teacher-target cache (or finds it), then the other ranks load it: none computes it twice."""
    built: list[TeacherTargets] = []
    on_main(lambda: built.append(build()))
    return built[0] if built else build()


def distill(
    teacher_run: Path,
    student: str,
    data: Path,
    out: Path,
    train_cfg: TrainConfig | None = None,
    distill_cfg: DistillConfig | None = None,
    resume: bool = False,
    cache_dir: Path | None = None,
    backbone_weights: Path | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    stop_after: int | None = None,
    max_bad_shards: int | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Distil the teacher in `teacher_run` into `student` ("family[:size]") on the images `data` names (a folder, a
    brace pattern or a list file); under torchrun every rank calls this with the same arguments. Up to
    `max_bad_shards` missing or unreadable shards are skipped (default: 1 %); `tensorboard` writes RUN/tensorboard/."""
    with process_group():
        return _distill(teacher_run, student, data, out, train_cfg, distill_cfg, resume, cache_dir, backbone_weights,
                        device, show_progress, stop_after, max_bad_shards, tensorboard)


def _distill(
    teacher_run: Path,
    student: str,
    data: Path,
    out: Path,
    train_cfg: TrainConfig | None,
    distill_cfg: DistillConfig | None,
    resume: bool,
    cache_dir: Path | None,
    backbone_weights: Path | None,
    device: torch.device | None,
    show_progress: bool,
    stop_after: int | None,
    max_bad_shards: int | None,
    tensorboard: bool,
) -> TrainResult:
    if tensorboard:
        check_tensorboard()
    student = str(parse_student(student))  # unknown names fail before any work; "family:size" is recorded
    train_cfg = train_cfg or default_train_config()
    distill_cfg = distill_cfg or DistillConfig()
    distill_cfg.validate()
    device = device or default_device()
    teacher, teacher_config = load_model(teacher_run)
    if teacher_config.get("kind") != "teacher":
        raise ValueError(f"--teacher {teacher_run} is a {teacher_config.get('kind')} run, not a teacher")
    teacher = teacher.to(device)
    shards = ImageTextShards(data, require_caption=False, max_bad_shards=max_bad_shards)
    if distill_cfg.images > len(shards):  # recorded as used, not as asked: config.json says what was trained on
        distill_cfg.images = len(shards)
    image_size = teacher_config["teacher"]["image"]["image_size"]
    student_cfg = StudentConfig(student=student, embed_dim=teacher.embed_dim, image_size=image_size)
    run_config = {
        "kind": "student",
        "student": student_cfg.to_dict(),
        "teacher": teacher_config["teacher"],
        "teacher_run": str(Path(teacher_run).resolve()),  # found again from any working directory
        "teacher_fingerprint": fingerprint(teacher),
        "text_fingerprint": teacher_fingerprint(teacher),  # what a vocabulary for this student must be built by
        "distill": asdict(distill_cfg),
        "data": str(Path(data).resolve()),
    }
    config = prepare_run(out, run_config, train_cfg, resume)
    if config["teacher_fingerprint"] != run_config["teacher_fingerprint"]:
        raise ValueError(f"--resume: {teacher_run} is not the teacher {out} was being distilled from (its weights "
                         "differ); give that teacher, or start a new run")
    train_cfg = TrainConfig.from_dict(config["train"])
    distill_cfg = DistillConfig(**config["distill"])
    student_cfg = StudentConfig.from_dict(config["student"])

    words = distillation_vocabulary(shards, distill_cfg)  # before the targets: a bad vocabulary fails in seconds
    cache_dir = writable_cache_dir(cache_dir or model_file(teacher_run).parent / "cache")
    targets = _built_once(partial(teacher_targets, teacher, shards, distill_cfg.images, image_size,
                                  distill_cfg.augment, cache_dir, show_progress and world().is_main))
    vocabulary = embed_class_names(teacher, words, get_templates("simple")).to(device)
    scale = float(teacher.scale().detach())
    del teacher

    torch.manual_seed(train_cfg.seed)
    model = DenseStudent(student_cfg, backbone_weights)
    model = model.to(device, memory_format=torch.channels_last) if device.type == "cuda" else model.to(device)
    if world().size > 1:  # BatchNorm over the global batch: the objective of one process
        normalise_across_ranks(model)
    generator_seed = train_cfg.seed * 1_000_003
    views = len(targets.images)
    rank, global_batch = world().rank, train_cfg.global_batch_size or train_cfg.batch_size

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        epoch, offset = divmod(step * global_batch, views)
        order = torch.randperm(views, generator=torch.Generator().manual_seed(generator_seed + epoch))
        index = torch.cat([order, order])[offset : offset + global_batch]  # the global batch; this rank's share:
        index = index[rank * train_cfg.batch_size : (rank + 1) * train_cfg.batch_size]
        images = channels_last(normalize_uint8(targets.images[index].to(device)))
        target = targets.embeddings[index].to(device).float()
        with mixed_precision(device):
            dense = model.encode_dense(images).float()
        if target.shape[-2:] != dense.shape[-2:]:
            target = F.interpolate(target, size=dense.shape[-2:], mode="bilinear", align_corners=False)
        terms = {"feature": feature_loss(dense, target)}
        terms["logit"] = logit_loss(dense, target, vocabulary, scale, distill_cfg.temperature)
        loss = distill_cfg.feature_weight * terms["feature"] + distill_cfg.logit_weight * terms["logit"]
        return {"loss": loss, **terms}

    return run_training(
        out,
        model,
        train_cfg,
        config,
        step_fn,
        resume=resume,
        description=f"distill {student_cfg.student}",
        extra_metrics=lambda: {"targets_reused": targets.reused, "vocabulary_words": len(words),
                               "corrupt_images": targets.skipped, "truncated_shards": len(shards.truncated_shards),
                               "bad_shards": len(shards.bad_shards)},
        show_progress=show_progress,
        stop_after=stop_after,
        tensorboard=tensorboard,
    )
