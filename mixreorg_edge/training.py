"""The training engine shared by `train-teacher` and `distill`: AdamW, warm-up + cosine, gradient clipping, a rich
progress bar, a JSONL metrics log (and TensorBoard scalars), atomic safetensors checkpoints and exact resume (model,
optimizer, RNG, step and elapsed time are restored; callers make their batches a pure function of the step).

One code path for one process and for N started by torchrun: with N the model trains under DistributedDataParallel
(gloo on CPUs, NCCL on GPUs), the budget, the stop on a signal and the logged losses are agreed across ranks every
step, and rank 0 alone writes the run (config, checkpoints, metrics, progress). A step is one global batch of
`global_batch_size` images, `batch_size` per rank; the learning-rate schedule counts global steps."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import load_training_state, save_model, save_training_state, saved_step
from .configs import config_from_dict
from .distributed import barrier, gather_objects, on_main, sum_across_ranks, world
from .progress import PhaseProgress
from .run_log import RunLog
from .runs import CONFIG_FILE, METRICS_FILE, MODEL_FILE, STATE_FILE, write_json_atomic, write_text_atomic


@dataclass
class TrainConfig:
    """Optimisation settings; a run lasts `steps` optimizer steps or `minutes` of training time. `batch_size` is per
    rank (per process); `global_batch_size`, set when a run starts (`batch_size` x ranks), is what a step trains on
    and stays when a run resumes with another number of ranks. `lr` is the peak for the global batch."""

    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    steps: int | None = None
    minutes: float | None = None
    save_every: int = 500
    seed: int = 0
    log_every: int = 10
    global_batch_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Refuse a budget that is missing, doubled or not positive, and non-positive batch or step intervals."""
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps or minutes")
        if (self.steps is not None and self.steps <= 0) or (self.minutes is not None and self.minutes <= 0):
            raise ValueError(f"the training budget must be positive, got steps={self.steps} minutes={self.minutes}")
        for name in ("batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, data)


@dataclass
class TrainResult:
    run: Path
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, Any]  # the caller's extra metrics at the end (e.g. corrupt images skipped)


def default_device() -> torch.device:
    """This rank's GPU (torchrun's LOCAL_RANK), else the CPU."""
    return torch.device("cuda", world().local_rank) if torch.cuda.is_available() else torch.device("cpu")


def mixed_precision(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU, whose runs stay float32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A CUDA image batch in channels-last memory (what cuDNN's convolutions prefer); CPU tensors as they are."""
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.is_cuda else tensor


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on norms, biases, position/group tokens, temperature).

    The fused implementation (one kernel over all parameters, CPU and CUDA): the same update, rounded differently,
    ~8x faster than the per-parameter loop on CPU (9 against 72 ms a step for the toy teacher's 6.2M parameters)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = param.ndim >= 2 and "pos_embed" not in name and "group_tokens" not in name
        (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero over the run's progress (0..1)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class Budget:
    """A run ends after `steps` steps or `minutes` of training time."""

    def __init__(self, cfg: TrainConfig) -> None:
        cfg.validate()
        self.cfg = cfg

    def progress(self, step: int, elapsed: float) -> float:
        if self.cfg.steps is not None:
            return step / self.cfg.steps
        return elapsed / (self.cfg.minutes * 60.0)

    def done(self, step: int, elapsed: float) -> bool:
        return self.progress(step, elapsed) >= 1.0


def provenance() -> dict[str, Any]:
    """How a run was made: the command line, when, and with which versions."""
    return {
        "command": " ".join([Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "mixreorg_edge": version("mixreorg-edge"),
        "device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
    }


def has_checkpoint(out: Path) -> bool:
    """Whether RUN holds a checkpoint to resume (what `--auto-resume` asks before resuming or starting)."""
    return (Path(out) / STATE_FILE).is_file()


def prepare_run(out: Path, run_config: dict[str, Any], train_cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    """Create RUN with its config.json (never overwriting a run), or read a resumed run's saved config; on rank 0
    alone, the config given to every rank.

    On resume the saved config wins; a budget in `train_cfg` (`steps` or `minutes` not None) replaces the saved one
    (to extend a run; the schedule then follows the new budget) and is written to config.json, while no budget keeps
    the saved one, so the run continues exactly where it stopped. The global batch stays; with another number of
    ranks each takes its share (`batch_size`, rewritten)."""
    return on_main(lambda: _prepare_run(Path(out), run_config, train_cfg, resume, world().size))


def _prepare_run(out: Path, run_config: dict[str, Any], train_cfg: TrainConfig, resume: bool,
                 ranks: int) -> dict[str, Any]:
    if resume:
        if not has_checkpoint(out):
            raise FileNotFoundError(f"--resume: no checkpoint to resume in {out} (expected {out / STATE_FILE})")
        try:
            saved = json.loads((out / CONFIG_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--resume: cannot read the run's {out / CONFIG_FILE} ({err})") from None
        step = saved_step(out / STATE_FILE)
        if train_cfg.steps is not None and train_cfg.steps <= step:
            raise ValueError(f"--resume --steps {train_cfg.steps}: the run in {out} is already at step {step}; give "
                             f"more steps than that to continue it")
        train = saved["train"]
        changed = _share_global_batch(train, ranks)
        if train_cfg.steps is not None or train_cfg.minutes is not None:
            train.update(steps=train_cfg.steps, minutes=train_cfg.minutes)
            TrainConfig.from_dict(train).validate()
            changed = True
        if changed:
            write_json_atomic(out / CONFIG_FILE, saved)
        return saved
    train_cfg.validate()
    if (out / STATE_FILE).exists() or (out / MODEL_FILE).exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    train_cfg.global_batch_size = train_cfg.batch_size * ranks
    config = {**run_config, "train": train_cfg.to_dict(), "provenance": provenance()}
    write_json_atomic(out / CONFIG_FILE, config)
    return config


def _share_global_batch(train: dict[str, Any], ranks: int) -> bool:
    """Give each of `ranks` ranks its share of a saved run's global batch (a run from before global batches had one
    process); whether `train` changed."""
    total = train.get("global_batch_size") or train["batch_size"]
    if total % ranks:
        raise ValueError(f"the run's global batch of {total} does not split among {ranks} processes; resume it with "
                         f"a number of processes that divides {total}")
    before = dict(train)
    train.update(global_batch_size=total, batch_size=total // ranks)
    return train != before


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a whole step, and the run was saved there (resume with --resume)."""

    def __init__(self, run: Path, step: int, signal_name: str) -> None:
        super().__init__(f"{signal_name}: {run} saved at step {step}; rerun with --resume to continue")
        self.run, self.step, self.signal_name = run, step, signal_name

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name))


@contextmanager
def _stop_on_signals() -> Iterator[list[str]]:
    """While training: SIGINT and SIGTERM are recorded (the loop saves and stops after the step in hand); a second
    SIGINT interrupts at once. Outside the main thread signals cannot be caught, and nothing changes."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


class _Step(torch.nn.Module):
    """A training step as a module's forward, so that DistributedDataParallel sees it (and averages the gradients
    of `model`'s parameters across ranks) whatever method of the model the step calls."""

    def __init__(self, model: torch.nn.Module, step_fn: Callable[[int], dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.model, self.step_fn = model, step_fn

    def forward(self, step: int) -> dict[str, torch.Tensor]:
        return self.step_fn(step)


def _data_parallel(model: torch.nn.Module, step_fn: Callable[[int], dict[str, torch.Tensor]],
                   device: torch.device) -> Callable[[int], dict[str, torch.Tensor]]:
    """`step_fn` under DistributedDataParallel with more than one rank (parameters a step leaves unused, e.g. a loss
    term absent from a batch, are allowed); the step function itself with one."""
    if world().size == 1:
        return step_fn
    return DistributedDataParallel(_Step(model, step_fn), device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def _agree(step_seconds: float, signals: list[str], losses: dict[str, torch.Tensor]) -> tuple[float, str | None,
                                                                                                dict[str, float]]:
    """What every rank must decide alike after a step: the step's time (the mean over ranks), the signal that stops
    the run (received by any rank) and the losses of the global batch (the mean of the ranks')."""
    ranks = world().size
    local = [step_seconds, float("SIGINT" in signals), float("SIGTERM" in signals)]
    values = torch.tensor(local + [float(value.detach()) for value in losses.values()], dtype=torch.float64,
                          device=losses["loss"].device)  # where NCCL can reduce it
    values = sum_across_ranks(values) / ranks if ranks > 1 else values
    stop = "SIGINT" if values[1] > 0 else "SIGTERM" if values[2] > 0 else None
    return float(values[0]), stop, dict(zip(losses, values[3:].tolist()))


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """The RNG seed of rank > 0 at `step` (a new run, or a resume with more ranks than were saved)."""
    digest = hashlib.blake2b(f"rank:{seed}:{rank}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _restore_rng(rng: dict[str, torch.Tensor], device: torch.device, seed: int, step: int) -> None:
    """This rank's saved RNG state; a rank the checkpoint has none for (more ranks than were saved) is seeded from
    (seed, rank, step)."""
    suffix = "" if world().rank == 0 else f"_rank{world().rank}"
    if "cpu" + suffix not in rng:
        torch.manual_seed(_rank_seed(seed, world().rank, step))
        return
    torch.set_rng_state(rng["cpu" + suffix])
    if "cuda" + suffix in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda" + suffix])


def run_training(
    out: Path,
    model: torch.nn.Module,
    train_cfg: TrainConfig,
    config: dict[str, Any],
    step_fn: Callable[[int], dict[str, torch.Tensor]],
    resume: bool = False,
    description: str = "train",
    extra_metrics: Callable[[], dict[str, Any]] | None = None,
    show_progress: bool = True,
    stop_after: int | None = None,
    data_state: Any | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Optimise `model` with `step_fn(step)` -> {"loss": ..., other terms} until the budget is spent.

    `data_state`: an object with `state_dict()` / `load_state_dict()` (JSON-able) and `merge_state_dicts(states)`
    (one state from every rank's) whose state is checkpointed and restored with the run's (e.g. the corrupt images
    a data loader has met). Every rank must return the same loss terms.

    Saves RUN/checkpoint.safetensors and RUN/model.safetensors (weights + `config`) every `save_every` steps and at
    the end. `stop_after` ends early at that step after saving, as an interruption would (used by tests).
    `tensorboard`: TensorBoard scalars beside metrics.jsonl (RUN/tensorboard/)."""
    out = Path(out)
    current = world()
    budget = Budget(train_cfg)
    device = next(model.parameters()).device
    # Zero-initialised layers and tiny Adam second moments produce subnormal floats, several times slower on CPU.
    torch.set_flush_denormal(True)
    optimizer = build_optimizer(model, train_cfg)
    step, elapsed = 0, 0.0
    if resume:
        step, extra, rng = load_training_state(out / STATE_FILE, model, optimizer)
        elapsed = float(extra["elapsed"])
        if data_state is not None and "data" in extra:
            data_state.load_state_dict(extra["data"])
        _restore_rng(rng, device, train_cfg.seed, step)
    elif current.rank > 0:  # the ranks' random draws (Gumbel noise, mixing plans) differ; rank 0's as in one process
        torch.manual_seed(_rank_seed(train_cfg.seed, current.rank, 0))
    train_step = _data_parallel(model, step_fn, device)
    global_batch = train_cfg.global_batch_size or train_cfg.batch_size

    model.train()
    last_loss = float("nan")
    if resume and current.is_main:  # rows logged after the checkpoint (an interrupted run) are logged again
        _drop_metrics_after(out / METRICS_FILE, step)
    main = current.is_main
    with _stop_on_signals() as signals, PhaseProgress(description, 1.0, show_progress and main) as progress, \
            (RunLog(out / METRICS_FILE, resume, tensorboard) if main else nullcontext()) as log:
        progress.update(budget.progress(step, elapsed))
        window_start, window_steps = time.perf_counter(), 0
        while not budget.done(step, elapsed) and (stop_after is None or step < stop_after):
            tick = time.perf_counter()
            lr = learning_rate(train_cfg, step, budget.progress(step, elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = train_step(step)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step += 1
            seconds, stop, values = _agree(time.perf_counter() - tick, signals, losses)
            elapsed += seconds
            window_steps += 1
            last_loss = values["loss"]
            if main and (step % train_cfg.log_every == 0 or budget.done(step, elapsed)):
                rate = window_steps * global_batch / max(time.perf_counter() - window_start, 1e-9)
                window_start, window_steps = time.perf_counter(), 0
                record = {
                    "step": step,
                    "elapsed": round(elapsed, 3),
                    "lr": lr,
                    "images_per_s": round(rate, 1),
                    "images_per_s_per_rank": round(rate / current.size, 1),
                    "grad_norm": round(float(grad_norm), 4),
                    **({"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
                       if device.type == "cuda" else {}),
                    **(extra_metrics() if extra_metrics else {}),
                    **{name: round(value, 5) for name, value in values.items()},
                }
                log.write(record)
                per_rank = f" ({rate / current.size:.0f} per rank)" if current.size > 1 else ""
                progress.update(budget.progress(step, elapsed),
                                status=f"step {step} loss {last_loss:.3f} {rate:.0f} img/s{per_rank}")
            if step % train_cfg.save_every == 0 or stop:
                save_checkpoint(out, model, optimizer, step, elapsed, config, data_state)
            if stop:
                raise TrainingInterrupted(out, step, stop)
    save_checkpoint(out, model, optimizer, step, elapsed, config, data_state)
    return TrainResult(out, step, elapsed, last_loss, extra_metrics() if extra_metrics else {})


def save_checkpoint(
    out: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed: float,
    config: dict[str, Any],
    data_state: Any | None = None,
) -> None:
    """Training state (for --resume) and inference weights, both written atomically by rank 0; called by every
    rank, which adds its RNG state (rank r > 0 under the keys `cpu_rank{r}`, `cuda_rank{r}`) and its data state."""
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    extra: dict[str, Any] = {"elapsed": elapsed}
    if data_state is not None:
        extra["data"] = data_state.merge_state_dicts(gather_objects(data_state.state_dict()))
        data_state.load_state_dict(extra["data"])  # every rank knows what every rank has met
    ranks = gather_objects(rng)
    if world().is_main:
        for rank, states in enumerate(ranks[1:], start=1):
            rng.update({f"{name}_rank{rank}": state for name, state in states.items()})
        save_training_state(out / STATE_FILE, model, optimizer, step, extra=extra, rng=rng)
        save_model(model, out / MODEL_FILE, {**config, "step": step})
    barrier()  # no rank goes on (or exits, ending the job) before the checkpoint is whole


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep only the metrics log's rows up to `step`, and no half-written last row of a crash (rewritten atomically;
    nothing to do without a log)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _logged_step(line: str) -> float:
    """The step of a metrics row; infinity for a line that is not a whole row."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else math.inf
    except (ValueError, KeyError, TypeError):
        return math.inf
