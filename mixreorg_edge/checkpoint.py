"""Atomic safetensors checkpoints for models and resumable training state (no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

MODEL_KIND = "model"
TRAINING_STATE_KIND = "training_state"
_MAX_LISTED = 5


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; a tensor sharing storage with an earlier one is cloned."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tensor = tensor.clone()
        elif ptr != 0:
            seen.add(ptr)
        out[name] = tensor
    return out


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Make ``path`` by ``write(temp_name)`` on a temp file in the same directory, fsync it and ``os.replace`` it into
    place: a reader (or a crash) sees the old file or the whole new one, never a part; the temp file never stays.
    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp_name)
        os.chmod(tmp_name, 0o666 & ~current_umask())  # after writing: a writer may replace the file (safetensors does)
        with open(tmp_name, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to ``path`` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp_name: save_file(_storable(tensors), tmp_name, metadata=metadata))


def _fsync_dir(directory: Path) -> None:
    """Persist the rename on POSIX file systems (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_checked(path: Path, kind: str, read_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()} if read_tensors else {}
    except SafetensorError as err:
        raise ValueError(f"{path} is not a {kind} file (not a safetensors file: {err})") from err
    found = metadata.get("kind")
    if found != kind:
        raise ValueError(f"{path} is not a {kind} file (kind={found!r})")
    return tensors, metadata


def read_safetensors(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file whose metadata "kind" is `kind` (a model, a
    training state, a vocabulary); clear errors for a missing file, a non-safetensors file or another kind."""
    return _open_checked(path, kind, read_tensors=True)


def read_header(path: Path, kind: str) -> dict[str, str]:
    """The metadata of such a file alone (its header; no tensor is read), with the same checks."""
    return _open_checked(path, kind, read_tensors=False)[1]


def save_model(model: torch.nn.Module, path: Path, config: dict) -> None:
    """Save ``model.state_dict()`` with ``config`` JSON-encoded in the metadata."""
    metadata = {"kind": MODEL_KIND, "config": json.dumps(config)}
    atomic_save_safetensors(model.state_dict(), path, metadata)


def load_model_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Return ``(state_dict, config)`` from a file written by :func:`save_model`."""
    tensors, metadata = read_safetensors(path, MODEL_KIND)
    return tensors, json.loads(metadata["config"])


def load_model_config(path: Path) -> dict:
    """The config of a file written by :func:`save_model`, read from its header without the weights."""
    return json.loads(read_header(path, MODEL_KIND)["config"])


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def _flatten_optimizer_state(state: dict[int, dict]) -> dict[str, torch.Tensor]:
    """Flatten ``optimizer.state_dict()["state"]`` to ``"<param index>.<state key>"`` tensors."""
    flat: dict[str, torch.Tensor] = {}
    for index, param_state in state.items():
        for key, value in param_state.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"optimizer state {index}.{key} is a {type(value).__name__}, not a tensor")
            flat[f"{index}.{key}"] = value
    return flat


def _optimizer_state(flat: dict[str, torch.Tensor], param_groups: list[dict], optimizer: torch.optim.Optimizer) -> dict:
    """Rebuild an optimizer state dict; JSON lists go back to tuples where the optimizer uses tuples."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in flat.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for saved, current in zip(param_groups, optimizer.param_groups):
        for key, value in current.items():
            if isinstance(value, tuple) and isinstance(saved.get(key), list):
                saved[key] = tuple(saved[key])
    return {"state": state, "param_groups": param_groups}


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict | None = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write model, optimizer, RNG tensors, step and ``extra`` into one safetensors file."""
    optim_state = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optim.{k}": v for k, v in _flatten_optimizer_state(optim_state["state"]).items()})
    tensors.update({f"rng.{k}": v for k, v in (rng or {}).items()})
    metadata = {
        "kind": TRAINING_STATE_KIND,
        "step": str(int(step)),
        "param_groups": json.dumps(optim_state["param_groups"]),
        "extra": json.dumps(extra or {}),
    }
    atomic_save_safetensors(tensors, path, metadata)


def check_model_match(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise ValueError when ``state`` does not fit ``model`` exactly (keys and shapes)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [
        f"{k}: saved {tuple(state[k].shape)} vs model {expected[k]}"
        for k in sorted(expected.keys() & state.keys())
        if tuple(state[k].shape) != expected[k]
    ]
    problems = [
        f"{label} ({len(items)}): {items[:_MAX_LISTED]}"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    if problems:
        raise ValueError(f"{path} does not match the model its config describes; " + "; ".join(problems))


def saved_step(path: Path) -> int:
    """The step a training-state file was saved at (read from its header; no tensors are loaded)."""
    return int(read_header(path, TRAINING_STATE_KIND)["step"])


def load_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, dict, dict[str, torch.Tensor]]:
    """Restore ``model`` and ``optimizer`` in place; return ``(step, extra, rng)``."""
    tensors, metadata = read_safetensors(path, TRAINING_STATE_KIND)
    model_state = _split(tensors, "model.")
    check_model_match(model, model_state, Path(path))
    model.load_state_dict(model_state)
    param_groups = json.loads(metadata["param_groups"])
    optimizer.load_state_dict(_optimizer_state(_split(tensors, "optim."), param_groups, optimizer))
    return int(metadata["step"]), json.loads(metadata["extra"]), _split(tensors, "rng.")


def fingerprint(model: torch.nn.Module, include: Callable[[str], bool] | None = None) -> str:
    """16 hex chars of a sha256 over the model's parameters and buffers (those whose name passes `include`), in
    sorted name order with dtype and shape: the same weights always give the same fingerprint."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    names = sorted(name for name in tensors if include is None or include(name))
    if not names:
        raise ValueError(f"{type(model).__name__} has no tensors to fingerprint")
    digest = hashlib.sha256()
    for name in names:
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
