"""`train-teacher`: MixReorg training on WebDataset image-caption shards (bf16 autocast on CUDA), on top of the
shared training engine (checkpoints, exact resume, metrics, progress)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from ..data.keywords import caption_words, keyword_batch
from ..data.shards import CaptionBatches, ImageTextShards
from ..data.transforms import normalize_uint8
from ..checkpoint import load_model_state
from ..known_words import VOCABULARY_FILE, record_caption_vocabulary
from ..runs import model_file
from ..training import TrainConfig, TrainResult, default_device, prepare_run, run_training
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
) -> TrainResult:
    """Train (or resume) a MixReorg teacher on the shards under `data`; writes the run directory `out`.

    Training reads images and captions only: the masks of a labelled split are never opened. `init_from` starts
    from another teacher run's weights, architecture and keywords (its `teacher_cfg` is then ignored), with a fresh
    optimizer and schedule; the parent's config is recorded under `init_from`. The words of the training captions
    (and the parent's) are recorded in RUN/caption_vocabulary.json (see known_words.py)."""
    if init_from is not None and init_image is not None:
        raise ValueError("give --init-from or --init-image, not both")
    device = device or default_device()
    shards = ImageTextShards(data)  # fails early and clearly on a missing or empty data directory
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
        run_config["keywords"] = caption_words(shards, max_words=teacher_cfg.keyword_vocabulary,
                                               needed_for="the keyword loss (keyword_prompts > 0) needs captions")
    if not resume and teacher_cfg.mixing.enabled:  # a new run's batch must split into mixing groups: now, not at step 0
        mixed_batch_size(train_cfg.batch_size, teacher_cfg.mixing.images, teacher_cfg.mixing.fraction)
    torch.manual_seed(train_cfg.seed)
    model = None if resume else MixReorgTeacher(teacher_cfg)  # a bad architecture fails before the run directory exists
    config = prepare_run(out, run_config, train_cfg, resume)
    if not (Path(out) / VOCABULARY_FILE).is_file():  # a resumed run keeps its record
        parent = config.get("init_from", {}).get("run")
        record_caption_vocabulary(out, shards, Path(parent) if parent else None)
    teacher_cfg, train_cfg = TeacherConfig.from_dict(config["teacher"]), TrainConfig.from_dict(config["train"])
    if model is None:  # a resumed run's architecture is its saved one
        torch.manual_seed(train_cfg.seed)
        model = MixReorgTeacher(teacher_cfg)
    model = model.to(device)
    if init_image is not None and not resume:
        load_vit_into_encoder(model.image_encoder, init_image)
    if parent_state is not None:
        model.load_state_dict(parent_state)
    batches = CaptionBatches(shards, train_cfg.batch_size, teacher_cfg.image.image_size, train_cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    vocabulary = frozenset(config.get("keywords", ()))
    # On CUDA the next batch is decoded while the GPU works; on a CPU the decoding thread takes cores from the step
    # (100 toy steps on 2 threads: 28 - 30 s without it, 35 - 36 s with it).
    next_batch = batches.prefetched if device.type == "cuda" else batches.batch

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        images, captions = next_batch(step)
        keywords = None
        if teacher_cfg.keyword_prompts > 0:
            words, targets = keyword_batch(captions, vocabulary, teacher_cfg.keyword_prompts)
            keywords = (model.keyword_prompt_tokens(words), targets)
        with autocast:
            return model.training_losses(normalize_uint8(images.to(device)), model.tokenize(captions), keywords)

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
                                   "truncated_shards": len(shards.truncated_shards)},
            show_progress=show_progress,
            stop_after=stop_after,
            data_state=batches,
        )
    finally:
        batches.close()


def _read_parent(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and config of the teacher run that `--init-from` names; refuses a student or other model."""
    state, config = load_model_state(model_file(run))
    if config.get("kind") != "teacher":
        raise ValueError(f"--init-from {run}: expected a teacher run, found a {config.get('kind')!r} model")
    return state, config
