"""What machine a benchmark ran on (recorded beside every result)."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

__all__ = ["Interference", "machine", "machine_info"]


def _cpu_model() -> str:
    """Return the CPU's model name with its widest vector extension ("AMD EPYC (AVX2)"):
    VMs of one name differ in it, and with it in CPU training's numerics and
    onnxruntime's kernels (a baseline trained on one does not reproduce on the other)."""
    name, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    name = name or platform.processor() or "unknown"
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{name} ({widest})" if widest else name


def machine_info() -> dict[str, Any]:
    """Return CPU model, core count, Python and key library versions, and the date."""
    libraries: dict[str, str | None] = {}
    for name in ("torch", "onnxruntime", "optuna", "torch-pruning", "fastapi", "sqlalchemy"):
        try:
            libraries[name] = version(name)
        except Exception:
            libraries[name] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": libraries,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def machine() -> dict[str, Any]:
    """Return :func:`machine_info` plus torch's thread count and the finishing time."""
    import torch

    return machine_info() | {
        "torch_threads": torch.get_num_threads(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _busy_cpu_seconds() -> tuple[float, float]:
    """Return (machine-wide busy CPU seconds incl. steal, this process's CPU seconds)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, sum(os.times()[:4])


class Interference:
    """Average number of cores other processes (and the hypervisor) took since creation."""

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._busy, self._own = _busy_cpu_seconds()

    def cores(self) -> float:
        """Return the other work in cores: 0 on a quiet machine, 1 for one busy core."""
        busy, own = _busy_cpu_seconds()
        others = (busy - self._busy) - (own - self._own)
        return round(max(0.0, others) / max(time.monotonic() - self._wall, 1e-9), 3)
