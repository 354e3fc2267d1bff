"""Workers: separate processes that claim trials and finalizations from the store.

:class:`Worker` is one worker's loop (``inferprune worker``); :func:`run_worker` runs it
until a signal; :class:`WorkerPool` keeps N of them beside the API (``inferprune serve``).
:class:`RemoteMeter` measures a job's latency on its target device through the agents.
"""

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
