"""Progress of every long phase (data generation, training, the teacher-target cache, evaluation): a labelled rich bar
on a terminal, left on screen when done; anywhere else (a log file, a pipe, CI) a few plain lines, one at each quarter
of the work, since a live bar there shows nothing until it ends (or, transient, nothing at all but blank lines)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import TypeVar

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

T = TypeVar("T")
LOG_LINES = 4  # off a terminal: a line when the phase starts and at each quarter of it


class PhaseProgress:
    """One labelled phase of `total` units: images (an int, shown as a count) or a fraction (training's 1.0).
    `advance` or `update` it, each with an optional status (e.g. the loss). Disabled: silent."""

    def __init__(self, description: str, total: float, enabled: bool = True, console: Console | None = None) -> None:
        self.description, self.total, self.enabled = description, total, enabled
        self.console = console or get_console()
        self.completed = 0.0
        self._progress: Progress | None = None
        self._next_quarter = 0
        self._started = 0.0

    def __enter__(self) -> PhaseProgress:
        self._started = time.perf_counter()
        if not self.enabled:
            return self
        if self.console.is_terminal and not self.console.is_dumb_terminal:
            columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn()]
            if isinstance(self.total, int):
                columns.append(TextColumn("{task.completed:.0f}/{task.total:.0f}"))
            columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
            self._progress = Progress(*columns, console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, status="")
        else:
            self._log("")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, amount: float = 1, status: str = "") -> None:
        """`amount` more units done."""
        self.update(self.completed + amount, status)

    def update(self, completed: float, status: str = "") -> None:
        """`completed` units done in all."""
        self.completed = completed
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=status)
        elif self.enabled and self._quarter() >= self._next_quarter:
            self._log(status)

    def _quarter(self) -> int:
        return int(LOG_LINES * min(self.completed / self.total, 1.0)) if self.total else LOG_LINES

    def _log(self, status: str) -> None:
        """One plain line: the phase, its share done (and count), the time it took so far and the status."""
        share = self.completed / self.total if self.total else 1.0
        count = f" ({self.completed:.0f}/{self.total})" if isinstance(self.total, int) else ""
        elapsed = time.perf_counter() - self._started
        self.console.print(f"{self.description}: {share:.0%}{count} after {elapsed:.0f} s"
                           + (f", {status}" if status else ""), highlight=False, markup=False, soft_wrap=True)
        self._next_quarter = self._quarter() + 1


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """`items`, one at a time, counted by a PhaseProgress (`total` defaults to `len(items)`)."""
    if total is None:
        if not isinstance(items, Sized):
            raise TypeError("track() needs a total for an iterable without a length")
        total = len(items)
    with PhaseProgress(description, total, enabled) as progress:
        for item in items:
            yield item
            progress.advance()
