"""Workers: separate processes that claim trials and finalizations from the store.

:class:`Worker` is one worker's loop (``inferprune worker``); :func:`run_worker` runs it
until a signal; :class:`WorkerPool` keeps N of them beside the API (``inferprune serve``).
"""

from service.worker._pool import WorkerPool, worker_devices
from service.worker._worker import Worker, run_worker

__all__ = ["Worker", "WorkerPool", "run_worker", "worker_devices"]
