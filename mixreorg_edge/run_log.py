"""A run's loss curves: one JSON line per logged step in RUN/metrics.jsonl and, when asked, the same numbers as
TensorBoard scalars in RUN/tensorboard/ (`torch.utils.tensorboard`, which needs the optional `tensorboard` package)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import TracebackType
from typing import Any

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_MISSING = ("TensorBoard logging needs the tensorboard package: pip install tensorboard (or pip install "
                       "-e \".[tensorboard]\"), or leave out --tensorboard")


def check_tensorboard() -> None:
    """A clear error, before any work, where TensorBoard logging was asked for and cannot be written."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        raise ValueError(TENSORBOARD_MISSING) from None


class RunLog:
    """Appends rows to `metrics` (after a resume) or starts it afresh; with `tensorboard`, every numeric field of a
    row but `step` also goes to RUN/tensorboard/ as a scalar at that step (a resumed run adds to the same folder;
    TensorBoard shows the last value logged for a step)."""

    def __init__(self, metrics: Path, append: bool, tensorboard: bool = False) -> None:
        self._file = Path(metrics).open("a" if append else "w")
        self._writer = None
        if tensorboard:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(metrics).parent / TENSORBOARD_DIR))

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(name, value, record["step"])
            self._writer.flush()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
