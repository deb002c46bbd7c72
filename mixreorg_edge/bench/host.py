"""What machine a measurement ran on, recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")


def _first_processor(cpuinfo: Path) -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo (empty where there is no such file)."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: Path = _CPUINFO) -> str:
    """The processor's marketing name ('AMD EPYC ...') from /proc/cpuinfo on Linux, else what `platform` knows."""
    return _first_processor(cpuinfo).get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_generation(cpuinfo: Path = _CPUINFO) -> str:
    """'family F model M' from /proc/cpuinfo ('' elsewhere): a VM's marketing name ('AMD EPYC') can hide which
    generation of processor a measurement ran on, and these numbers tell them apart (AMD family 25 = Zen 3/4,
    26 = Zen 5)."""
    fields = _first_processor(cpuinfo)
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']} model {fields['model']}"
    return ""


def host_info() -> dict[str, object]:
    """Host name, CPU model and generation, the instruction set torch's kernels dispatch to, logical CPUs, torch
    version and the threads torch uses now."""
    return {"host": platform.node(), "cpu": cpu_model(), "cpu_generation": cpu_generation(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "logical_cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
