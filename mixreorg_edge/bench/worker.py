"""One benchmarked model in a process of its own, driven by the benchmark over a pipe, so that each runtime's peak
memory is its own and every runtime can be timed round-robin with the others.

The child (`python -m mixreorg_edge.bench.worker SPEC`) imports only what its runner needs (ONNX Runtime and
OpenVINO runners never import torch), builds the runner from SPEC's `factory` ("module:function") and `kwargs`,
then answers one JSON line per command read from stdin: `warmup`, `time` (the milliseconds of one call, timed in the
child), `memory` (peak resident set), `predict` (every input of an .npy file, outputs saved as .npy), `exit`.
Anything a runtime prints goes to the child's stderr, never into the replies."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def artifact_runner(target: str, model_file: str, threads: int | None = None) -> Runner:
    """An exported artifact's model file, run by its target's runtime (see export.target)."""
    from ..export.target import get_target

    return get_target(target).load(Path(model_file), threads)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: Linux's VmHWM (its own address space's high-water mark; the
    ru_maxrss of a child started by a large parent starts at the parent's peak), else ru_maxrss (kilobytes on
    Linux, bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _serve(spec: dict[str, Any], commands: IO[str], replies: IO[str]) -> None:
    def reply(**message: Any) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    module, _, name = spec["factory"].partition(":")
    started = time.perf_counter()
    try:
        run = getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))
        example = np.load(spec["example"])
        run(example)  # the first call: part of loading for runtimes that compile lazily
    except Exception as error:  # noqa: BLE001 - any failure to load is this row's status, reported to the parent
        reply(ok=False, error=f"{type(error).__name__}: {error}")
        return
    reply(ok=True, load_ms=round((time.perf_counter() - started) * 1000.0, 1), rss_mb=peak_rss_mb())
    for line in commands:
        command = json.loads(line)
        kind = command["cmd"]
        if kind == "warmup":
            for _ in range(command["n"]):
                run(example)
            reply(ok=True)
        elif kind == "time":
            start = time.perf_counter()
            run(example)
            reply(ok=True, ms=(time.perf_counter() - start) * 1000.0)
        elif kind == "memory":
            reply(ok=True, peak_rss_mb=peak_rss_mb())
        elif kind == "predict":
            inputs = np.load(command["inputs"], mmap_mode="r")
            outputs = np.stack([np.asarray(run(np.ascontiguousarray(inputs[i : i + 1]))) for i in range(len(inputs))])
            np.save(command["out"], outputs)
            reply(ok=True, shape=list(outputs.shape))
        elif kind == "exit":
            reply(ok=True)
            return
        else:
            reply(ok=False, error=f"unknown command {kind!r}")


class WorkerError(RuntimeError):
    """A benchmark child failed to load its model or died."""


class Worker:
    """The parent's handle on one child: start it (the spec's runner loaded), send commands, read replies."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.log = log
        # OpenMP threads (PyTorch's) sleep between calls instead of spinning, so that an idle child does not take the
        # cores of the one being timed (on 2 cores spinning neighbours made eager PyTorch 50x slower)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        with open(log, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(spec)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        self.loaded = self._read()  # {"load_ms", "rss_mb"}; WorkerError if loading failed

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise WorkerError(f"the child process exited with status {self.process.returncode}: {self._log_tail()}")
        message = json.loads(line)
        if not message.pop("ok"):
            raise WorkerError(message["error"])
        return message

    def _log_tail(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "nothing on stderr"

    def call(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        try:
            self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.process.wait()
            raise WorkerError(f"the child process exited with status {self.process.returncode}: {self._log_tail()}")
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("exit")
            except WorkerError:
                pass
            self.process.wait(timeout=30)


def main() -> None:
    """The child's entry point: replies on the original stdout; everything else printed goes to stderr."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(json.loads(sys.argv[1]), sys.stdin, replies)


if __name__ == "__main__":
    main()
