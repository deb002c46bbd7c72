"""The interface every export target implements (one module per target: executorch, coreml, onnx, openvino,
tensorrt), the registry that finds them, and the option table that says what each accepts."""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # the runtime side (`load`) imports without torch: a benchmark child measures the runtime alone
    import torch
    from torch import nn

    from ..quantize import AccuracyControl
    from .images import CalibrationSet

OUTPUT_KINDS = ("labels", "scores", "embeddings")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TARGET_NAMES = ("executorch", "coreml", "onnx", "openvino", "tensorrt")
INPUT_NAME = "images"  # every artifact's input; its output is named after its kind

Runner = Callable[[np.ndarray], np.ndarray]


class CannotRun(RuntimeError):
    """This host cannot run an artifact of this target (Core ML on Linux, TensorRT without CUDA)."""


@dataclass
class ConversionJob:
    """What a target converts: the float deployable `graph` (images -> output), the `network` part of it (images ->
    embeddings, what int8 quantizes) and `rebuild`, which puts a quantized network back under the float head."""

    graph: nn.Module
    network: nn.Module
    rebuild: Callable[[nn.Module], nn.Module]
    output: str
    example: torch.Tensor
    precision: str
    calibration: CalibrationSet | None = None
    accuracy: AccuracyControl | None = None
    simulated: nn.Module | None = None  # set by a target that converted a quantized PyTorch graph (PT2E)

    @property
    def input_name(self) -> str:
        return INPUT_NAME

    @property
    def output_name(self) -> str:
        return self.output


class ExportTarget(ABC):
    """One deployment runtime: how to convert a deployable graph into its model file, run that file on this host,
    and describe it. Subclasses set the class attributes (the option table) and implement `convert` and `load`."""

    name: ClassVar[str]
    model_file: ClassVar[str]  # file (or package folder) name inside the artifact folder
    precisions: ClassVar[tuple[str, ...]]
    default_precision: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]] = OUTPUT_KINDS
    packages: ClassVar[tuple[str, ...]]  # distributions whose versions are recorded in metadata.json
    # how a `labels` graph upsamples its logits for this runtime (upsampling.py; benchmarks/upsampling.py measured
    # which form each runtime runs faster)
    upsampling: ClassVar[str] = "interpolate"

    def file_name(self, precision: str) -> str:
        """The model file's name for an artifact of `precision`."""
        return self.model_file

    def missing(self) -> str | None:
        """Why this host cannot export to this target (None: it can)."""
        return None

    def cannot_run(self, precision: str | None = None) -> str | None:
        """Why this host cannot run this target's artifacts (of `precision`, where that matters; None: it can)."""
        return None

    def runtime_config(self, precision: str) -> dict[str, str]:
        """Properties an app must give the runtime when it loads an artifact of `precision` to run it as its parity
        was checked (`metadata.json`'s `runtime_config`; none for most targets)."""
        return {}

    @abstractmethod
    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        """Write the model file at `path`; return the quantization record (engine, quantizer, float-kept layers)."""

    @abstractmethod
    def load(self, path: Path, threads: int | None = None) -> Runner:
        """The artifact at `path` as a function of one float32 input array, on `threads` CPU threads where the
        runtime takes a number (default: the runtime's own); raises CannotRun where it cannot run."""

    def inspect(self, path: Path) -> dict[str, Any]:
        """A structural description of the saved model (inputs, outputs, op counts, weight dtypes)."""
        return {}

    def versions(self) -> dict[str, str]:
        found = {}
        for package in self.packages:
            try:
                found[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                found[package] = "not installed"
        return found

    def check_options(self, precision: str, output: str) -> None:
        """ValueError for a precision or output this target does not take (never silently ignored)."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if precision not in self.precisions:
            raise ValueError(f"--target {self.name} does not take --precision {precision} "
                             f"(it takes: {', '.join(self.precisions)})")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUT_KINDS)}")
        if output not in self.outputs:
            raise ValueError(f"--target {self.name} does not take --output {output} (it takes: {', '.join(self.outputs)})")


def get_target(name: str) -> ExportTarget:
    """The target called `name` (its module is imported only now; its runtime only when it is used)."""
    if name not in TARGET_NAMES:
        raise ValueError(f"unknown target {name!r}; choose one of: {', '.join(TARGET_NAMES)}")
    module = importlib.import_module(f"{__package__}.{name}")
    return module.TARGET


def option_table() -> list[dict[str, Any]]:
    """Per target: accepted precisions (default first), outputs, model file, and whether this host can export to it
    and run it."""
    rows = []
    for name in TARGET_NAMES:
        target = get_target(name)
        rows.append({"target": name, "precisions": [target.default_precision] + [p for p in target.precisions
                                                                                 if p != target.default_precision],
                     "outputs": list(target.outputs), "model_file": target.model_file,
                     "export_here": target.missing() or "yes", "run_here": target.missing() or target.cannot_run() or "yes"})
    return rows
