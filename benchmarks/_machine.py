"""What machine a benchmark ran on (recorded beside every result)."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Return CPU model, core count, Python and key library versions, and the date."""
    libraries = {}
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
