"""`train-teacher`: MixReorg training on WebDataset image-caption shards (bf16 autocast and channels-last on CUDA),
on top of the shared training engine (checkpoints, exact resume, metrics, progress, one or many processes)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_model_state, saved_step
from ..data.keywords import caption_words, keyword_batch
from ..data.loader import WorkerBatches
from ..data.shards import CaptionBatches, ImageTextShards, step_generator
from ..data.transforms import normalize_uint8
from ..distributed import gather_objects, on_main, process_group, world
from ..known_words import VOCABULARY_FILE, record_caption_vocabulary
from ..runs import STATE_FILE, model_file
from ..run_log import check_tensorboard
from ..training import (TrainConfig, TrainResult, channels_last, default_device, mixed_precision, prepare_run,
                        run_training)
from .config import TeacherConfig
from .init import load_vit_into_encoder
from .mixing import mixed_batch_size
from .model import MixReorgTeacher


def train_teacher(
    data: Path,
    out: Path,
    teacher_cfg: TeacherConfig,
    train_cfg: TrainConfig,
    resume: bool = False,
    init_image: Path | None = None,
    init_from: Path | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    stop_after: int | None = None,
    workers: int = 0,
    max_bad_shards: int | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Train (or resume) a MixReorg teacher on the shards `data` names (a folder, a brace pattern or a list file);
    writes the run directory `out`. Under torchrun, every rank calls this with the same arguments (data parallel:
    `train_cfg.batch_size` images per rank, contrastive negatives from every rank, rank 0 writes the run).

    Training reads images and captions only: the masks of a labelled split are never opened. `init_from` starts
    from another teacher run's weights, architecture and keywords (its `teacher_cfg` is then ignored), with a fresh
    optimizer and schedule; the parent's config is recorded under `init_from`. The words of the training captions
    (and the parent's) are recorded in RUN/caption_vocabulary.json (see known_words.py). `workers` DataLoader
    processes decode the batches ahead (0: in this process, ahead in a thread on CUDA); up to `max_bad_shards`
    missing or unreadable shards are skipped (default: 1 %); `tensorboard` writes RUN/tensorboard/ too."""
    with process_group():
        return _train_teacher(data, out, teacher_cfg, train_cfg, resume, init_image, init_from, device,
                              show_progress, stop_after, workers, max_bad_shards, tensorboard)


def _train_teacher(
    data: Path,
    out: Path,
    teacher_cfg: TeacherConfig,
    train_cfg: TrainConfig,
    resume: bool,
    init_image: Path | None,
    init_from: Path | None,
    device: torch.device | None,
    show_progress: bool,
    stop_after: int | None,
    workers: int,
    max_bad_shards: int | None,
    tensorboard: bool,
) -> TrainResult:
    if init_from is not None and init_image is not None:
        raise ValueError("give --init-from or --init-image, not both")
    if tensorboard:
        check_tensorboard()
    device = device or default_device()
    # fails early and clearly on missing or empty data
    shards = ImageTextShards(data, max_bad_shards=max_bad_shards)
    parent_state = None
    if init_from is not None and not resume:  # a resumed run already holds its weights
        parent_state, parent_config = _read_parent(init_from)
        teacher_cfg = TeacherConfig.from_dict(parent_config["teacher"])
    run_config = {"kind": "teacher", "teacher": teacher_cfg.to_dict(), "data": str(data)}
    if parent_state is not None:
        run_config["init_from"] = {"run": str(init_from), **{k: v for k, v in parent_config.items() if k != "keywords"}}
        if "keywords" in parent_config:
            run_config["keywords"] = parent_config["keywords"]
    elif teacher_cfg.keyword_prompts > 0 and not resume:  # a resumed run keeps its saved keywords
        run_config["keywords"] = on_main(lambda: caption_words(
            shards, max_words=teacher_cfg.keyword_vocabulary,
            needed_for="the keyword loss (keyword_prompts > 0) needs captions"))
    if not resume and teacher_cfg.mixing.enabled:  # a rank's batch must split into mixing groups: now, not at step 0
        mixed_batch_size(train_cfg.batch_size, teacher_cfg.mixing.images, teacher_cfg.mixing.fraction)
    torch.manual_seed(train_cfg.seed)
    model = None if resume else MixReorgTeacher(teacher_cfg)  # a bad architecture fails before the run directory exists
    config = prepare_run(out, run_config, train_cfg, resume)
    parent = config.get("init_from", {}).get("run")
    on_main(lambda: None if (Path(out) / VOCABULARY_FILE).is_file()  # a resumed run keeps its record
            else record_caption_vocabulary(out, shards, Path(parent) if parent else None))
    teacher_cfg, train_cfg = TeacherConfig.from_dict(config["teacher"]), TrainConfig.from_dict(config["train"])
    if resume and teacher_cfg.mixing.enabled:  # the share of the global batch each rank now takes must split too
        mixed_batch_size(train_cfg.batch_size, teacher_cfg.mixing.images, teacher_cfg.mixing.fraction)
    if model is None:  # a resumed run's architecture is its saved one
        torch.manual_seed(train_cfg.seed)
        model = MixReorgTeacher(teacher_cfg)
    model = model.to(device, memory_format=torch.channels_last) if device.type == "cuda" else model.to(device)
    if init_image is not None and not resume:
        load_vit_into_encoder(model.image_encoder, init_image)
    if parent_state is not None:
        model.load_state_dict(parent_state)
    rank = world()
    batches = CaptionBatches(shards, train_cfg.batch_size, teacher_cfg.image.image_size, train_cfg.seed, rank.rank,
                             rank.size)
    vocabulary = frozenset(config.get("keywords", ()))
    # On CUDA the next batch is decoded while the GPU works; on a CPU the decoding thread takes cores from the step
    # (100 toy steps on 2 threads: 28 - 30 s without it, 35 - 36 s with it). Worker processes, when asked for.
    loader = None
    if workers > 0:
        start = saved_step(Path(out) / STATE_FILE) if resume else 0
        loader = WorkerBatches(batches, start, workers, pin_memory=device.type == "cuda")
        next_batch = loader.batch
    else:
        next_batch = batches.prefetched if device.type == "cuda" else batches.batch

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, captions = next_batch(step)
        keywords = None
        if teacher_cfg.keyword_prompts > 0:  # the global batch's keywords: the same prompts on every rank
            every_caption = [caption for part in gather_objects(captions) for caption in part]
            words, targets = keyword_batch(every_caption, vocabulary, teacher_cfg.keyword_prompts,
                                           step_generator("keywords", train_cfg.seed, step))
            mine = slice(rank.rank * len(captions), (rank.rank + 1) * len(captions))
            keywords = (model.keyword_prompt_tokens(words), targets[mine])
        pixels = channels_last(normalize_uint8(images.to(device, non_blocking=True)))
        with mixed_precision(device):
            return model.training_losses(pixels, model.tokenize(captions), keywords)

    try:
        return run_training(
            out,
            model,
            train_cfg,
            config,
            step_fn,
            resume=resume,
            description="train-teacher",
            extra_metrics=lambda: {"logit_scale": round(model.scale().item(), 3), "corrupt_images": batches.corrupt,
                                   "truncated_shards": len(shards.truncated_shards),
                                   "bad_shards": len(shards.bad_shards)},
            show_progress=show_progress,
            stop_after=stop_after,
            data_state=batches,
            tensorboard=tensorboard,
        )
    finally:
        if loader is not None:
            loader.close()
        batches.close()


def _read_parent(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and config of the teacher run that `--init-from` names; refuses a student or other model."""
    state, config = load_model_state(model_file(run))
    if config.get("kind") != "teacher":
        raise ValueError(f"--init-from {run}: expected a teacher run, found a {config.get('kind')!r} model")
    return state, config
