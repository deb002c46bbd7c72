"""Model and training-state checkpoints: round trips, exact resumption, atomicity."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mixreorg_edge import checkpoint
from mixreorg_edge.checkpoint import (
    atomic_save_safetensors,
    load_model_state,
    load_training_state,
    save_model,
    save_training_state,
)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(5, 4, generator=g), torch.randn(5, 2, generator=g)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)


def test_model_round_trip(tmp_path: Path) -> None:
    model = _model(0)
    config = {"embed_dim": 8, "name": "tiny", "layers": [1, 2]}
    save_model(model, tmp_path / "m.safetensors", config)
    state, loaded_config = load_model_state(tmp_path / "m.safetensors")
    assert loaded_config == config
    assert state.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor)


def test_shared_and_non_contiguous_tensors(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"a": base, "view": base[1:], "t": base.t()}
    atomic_save_safetensors(tensors, tmp_path / "x.safetensors")
    loaded = load_file(tmp_path / "x.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)


def test_training_state_round_trip_resumes_exactly(tmp_path: Path) -> None:
    model = _model(0)
    optimizer = _adamw(model)
    _train(model, optimizer, range(3))
    rng = {"torch": torch.get_rng_state()}
    save_training_state(tmp_path / "state.safetensors", model, optimizer, step=3, extra={"loss": 0.5}, rng=rng)
    _train(model, optimizer, range(3, 6))

    restored = _model(1)
    restored_opt = _adamw(restored)
    step, extra, loaded_rng = load_training_state(tmp_path / "state.safetensors", restored, restored_opt)
    assert (step, extra) == (3, {"loss": 0.5})
    assert torch.equal(loaded_rng["torch"], rng["torch"])
    assert restored_opt.param_groups[0]["betas"] == (0.8, 0.95)

    reference = _model(0)
    reference_opt = _adamw(reference)
    _train(reference, reference_opt, range(3))
    saved = reference_opt.state_dict()["state"]
    for index, state in restored_opt.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(value, saved[index][key]), (index, key)

    _train(restored, restored_opt, range(3, 6))
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)


def test_mismatched_model_is_refused(tmp_path: Path) -> None:
    model = _model(0)
    save_training_state(tmp_path / "s.safetensors", model, _adamw(model), step=0)
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))  # 0 reshaped, 1/3 gone, 2 new
    with pytest.raises(ValueError, match="does not match the model") as err:
        load_training_state(tmp_path / "s.safetensors", other, _adamw(other))
    for problem in ("missing keys", "unexpected keys", "shape mismatches"):
        assert problem in str(err.value)


def test_clear_errors_for_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_model_state(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model_state(tmp_path / "junk.safetensors")
    model = _model(0)
    save_training_state(tmp_path / "s.safetensors", model, _adamw(model), step=0)
    with pytest.raises(ValueError, match="not a model file"):
        load_model_state(tmp_path / "s.safetensors")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_model(_model(0), path, {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    before = path.read_bytes()

    def partial_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", partial_write)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(1), path, {"v": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert load_model_state(path)[1] == {"v": 1}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_respect_the_umask(umask: int, tmp_path: Path) -> None:
    """Files written through the temp-file-then-rename path get a plain open's permissions (0666 less the umask),
    not mkstemp's 0600, so others on a shared machine can read the models."""
    import os

    from mixreorg_edge.runs import write_json_atomic

    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "config.json", {"a": 1})
        checkpoint.save_model(_model(0), tmp_path / "model.safetensors", {"kind": "test"})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    expected = plain.stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected
