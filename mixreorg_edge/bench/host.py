"""What machine a measurement ran on, recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = _CPUINFO) -> str:
    """The processor's marketing name ('AMD EPYC ...') from /proc/cpuinfo on Linux, else what `platform` knows."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def host_info() -> dict[str, object]:
    """Host name, CPU model, logical CPUs, torch version and the threads torch uses now."""
    return {"host": platform.node(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
