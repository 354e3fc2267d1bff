"""Workers: separate processes that claim trials and finalizations from the store.

:class:`Worker` is one worker's loop (``inferprune worker``); :func:`run_worker` runs it
until a signal; :class:`WorkerPool` keeps N of them beside the API (``inferprune serve``).
:class:`RemoteMeter` measures a job's latency on its target device through the agents.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.worker._pool import WorkerPool, worker_devices
    from service.worker._remote_meter import (
        DeviceMeters,
        DeviceUnavailable,
        RemoteMeter,
        measurement_key,
        zip_models,
    )
    from service.worker._worker import Worker, run_worker

__all__ = [
    "DeviceMeters",
    "DeviceUnavailable",
    "RemoteMeter",
    "Worker",
    "WorkerPool",
    "measurement_key",
    "run_worker",
    "worker_devices",
    "zip_models",
]

_HOMES = {
    "WorkerPool": "_pool",
    "worker_devices": "_pool",
    "DeviceMeters": "_remote_meter",
    "DeviceUnavailable": "_remote_meter",
    "RemoteMeter": "_remote_meter",
    "measurement_key": "_remote_meter",
    "zip_models": "_remote_meter",
    "Worker": "_worker",
    "run_worker": "_worker",
}


def __getattr__(name: str) -> Any:
    """Import a name's module when it is first used: ``serve``'s API process needs only
    :class:`WorkerPool`, and the worker modules import torch (seconds, and memory an
    API-only process does not need)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
