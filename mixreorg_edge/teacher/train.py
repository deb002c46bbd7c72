"""`train-teacher`: AdamW, warm-up + cosine, gradient clipping, bf16 autocast on CUDA, JSONL metrics, atomic
safetensors checkpoints and exact resume (data order and RNG are restored, so the loss curve continues unchanged)."""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..checkpoint import load_training_state, save_model, save_training_state
from ..data.shards import CaptionBatches, ImageTextShards
from ..data.transforms import normalize_uint8
from ..runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE, write_json_atomic
from .config import TeacherConfig, TrainConfig
from .init import load_vit_into_encoder
from .model import MixReorgTeacher


@dataclass
class TrainResult:
    run: Path
    steps: int
    seconds: float
    final_loss: float
    corrupt_images: int


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases, embeddings' positions or the temperature)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        is_matrix = param.ndim >= 2 and "pos_embed" not in name and "group_tokens" not in name
        (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero over the run's progress (0..1)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _Budget:
    """A run ends after `steps` steps or `minutes` of training time (whichever is configured)."""

    def __init__(self, cfg: TrainConfig) -> None:
        if (cfg.steps is None) == (cfg.minutes is None):
            raise ValueError("give exactly one of steps or minutes")
        self.cfg = cfg

    def progress(self, step: int, elapsed: float) -> float:
        if self.cfg.steps is not None:
            return step / self.cfg.steps
        return elapsed / (self.cfg.minutes * 60.0)

    def done(self, step: int, elapsed: float) -> bool:
        return self.progress(step, elapsed) >= 1.0


def _prepare_run(
    out: Path, data: Path, teacher_cfg: TeacherConfig, train_cfg: TrainConfig, resume: bool
) -> tuple[TeacherConfig, TrainConfig]:
    """Create RUN (refusing to overwrite a run unless resuming) or read a resumed run's configs."""
    config_path = out / CONFIG_FILE
    if resume:
        if not (out / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume in {out} (expected {out / STATE_FILE})")
        saved = json.loads(config_path.read_text())
        saved_train = TrainConfig.from_dict(saved["train"])
        saved_train.steps, saved_train.minutes = train_cfg.steps, train_cfg.minutes  # the budget may be extended
        return TeacherConfig.from_dict(saved["teacher"]), saved_train
    if (out / STATE_FILE).exists() or (out / MODEL_FILE).exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        config_path,
        {"kind": "teacher", "teacher": teacher_cfg.to_dict(), "train": train_cfg.to_dict(), "data": str(data)},
    )
    return teacher_cfg, train_cfg


def train_teacher(
    data: Path,
    out: Path,
    teacher_cfg: TeacherConfig,
    train_cfg: TrainConfig,
    resume: bool = False,
    init_image: Path | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or resume) a MixReorg teacher on WebDataset image-caption shards under `data`; writes RUN=`out`.

    `stop_after` ends the process early at that step after saving a checkpoint, as an interruption would (tests).
    """
    out = Path(out)
    device = device or default_device()
    shards = ImageTextShards(data)  # fails early and clearly on a missing or empty data directory
    teacher_cfg, train_cfg = _prepare_run(out, data, teacher_cfg, train_cfg, resume)
    budget = _Budget(train_cfg)
    # Zero-initialised gates and tiny Adam second moments produce subnormal floats, which are ~10x slower on CPU.
    torch.set_flush_denormal(True)
    torch.manual_seed(train_cfg.seed)
    model = MixReorgTeacher(teacher_cfg).to(device)
    if init_image is not None and not resume:
        load_vit_into_encoder(model.image_encoder, init_image)
    optimizer = build_optimizer(model, train_cfg)
    batches = CaptionBatches(shards, train_cfg.batch_size, teacher_cfg.image.image_size, train_cfg.seed)

    step, elapsed = 0, 0.0
    if resume:
        step, extra, rng = load_training_state(out / STATE_FILE, model, optimizer)
        elapsed = float(extra["elapsed"])
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"])

    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    last_loss = float("nan")
    with _progress(show_progress) as progress, (out / METRICS_FILE).open("a") as log:
        task = progress.add_task("train-teacher", total=1.0, status="")
        window_start, window_images = time.perf_counter(), 0
        while not budget.done(step, elapsed) and (stop_after is None or step < stop_after):
            tick = time.perf_counter()
            lr = learning_rate(train_cfg, step, budget.progress(step, elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, captions = batches.batch(step)
            images = normalize_uint8(images.to(device))
            tokens = model.tokenize(captions)
            with autocast:
                losses = model.training_losses(images, tokens)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step += 1
            elapsed += time.perf_counter() - tick
            window_images += images.shape[0]
            last_loss = losses["loss"].item()
            if step % train_cfg.log_every == 0 or budget.done(step, elapsed):
                rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                window_start, window_images = time.perf_counter(), 0
                record = {
                    "step": step,
                    "elapsed": round(elapsed, 3),
                    "lr": lr,
                    "images_per_s": round(rate, 1),
                    "grad_norm": round(float(grad_norm), 4),
                    "logit_scale": round(model.scale().item(), 3),
                    "corrupt_images": batches.corrupt,
                    **{name: round(value.item(), 5) for name, value in losses.items()},
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                progress.update(
                    task,
                    completed=budget.progress(step, elapsed),
                    status=f"step {step} loss {last_loss:.3f} {rate:.0f} img/s",
                )
            if step % train_cfg.save_every == 0:
                _save(out, model, optimizer, step, elapsed, teacher_cfg, train_cfg)
    _save(out, model, optimizer, step, elapsed, teacher_cfg, train_cfg)
    return TrainResult(out, step, elapsed, last_loss, batches.corrupt)


def _save(
    out: Path,
    model: MixReorgTeacher,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed: float,
    teacher_cfg: TeacherConfig,
    train_cfg: TrainConfig,
) -> None:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_training_state(out / STATE_FILE, model, optimizer, step, extra={"elapsed": elapsed}, rng=rng)
    config: dict[str, Any] = {
        "kind": "teacher",
        "teacher": teacher_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "step": step,
    }
    save_model(model, out / MODEL_FILE, config)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
    )

