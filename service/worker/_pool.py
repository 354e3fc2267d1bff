"""Worker processes beside the API server: started, restarted when they die, stopped with it.

``inferprune serve --workers N`` runs a :class:`WorkerPool`. Workers are spawned (no
forked torch or database state). When the server stops, however it is told to (Ctrl-C,
SIGTERM from systemd or ``docker stop``), every worker stops with it: each is asked to
stop, then to abort the unit in flight, which hands its trial back to the queue exactly
as a crashed worker's would be, then killed if it still runs. On Linux a worker also
stops by itself when the server process dies without cleaning up (SIGKILL).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.process import BaseProcess
from types import TracebackType

from service.logs import configure_logging
from service.settings import Settings

__all__ = ["WorkerPool", "worker_devices"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(settings_json: str, threads: int, parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    from service.worker._worker import run_worker

    _stop_with_parent(parent_pid)
    settings = Settings.model_validate_json(settings_json)
    configure_logging(logging.INFO, settings.log_format)
    sys.exit(run_worker(settings, threads=threads))


def worker_devices(device: str | None, workers: int | None) -> list[str]:
    """Return the device of each worker ``serve`` starts.

    ``cuda`` (and ``auto`` on a machine with GPUs) gives each worker its own GPU, one
    worker per visible GPU unless ``workers`` says how many (more workers than GPUs
    share them round-robin); any other device (``cpu``, ``cuda:N``, ``mps``) is every
    worker's. Without ``workers``, one worker when there is no GPU to spread over.

    No workers need no device: ``workers`` 0 gives an empty list without importing
    torch (an API-only ``serve``).

    Raises:
        DeviceError: the device is not there (checked before any worker starts).
    """
    if workers == 0:
        return []
    from models.device import DEVICE_ENV, accelerator_count, resolve_device  # imports torch

    resolved = resolve_device(device)
    name = (device if device is not None else os.environ.get(DEVICE_ENV, "auto")).strip().lower()
    gpus = accelerator_count("cuda")
    if name in ("cuda", "auto") and resolved.type == "cuda" and gpus:
        count = gpus if workers is None else workers
        return [f"cuda:{i % gpus}" for i in range(count)]
    return [str(resolved)] * (1 if workers is None else workers)


class WorkerPool:
    """``count`` worker processes on this machine, kept running until :meth:`stop`.

    Worker ``i`` trains on ``devices[i % len(devices)]`` (default: ``settings.device``
    for all; see :func:`worker_devices`).

    Each worker gets its share of the cores (``settings.torch_threads``, else the
    cores divided by ``count``). A supervisor thread replaces a worker that exits; the
    other workers retry its lost trial once its lease expires.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Not
    thread-safe: one thread starts and stops it.
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        devices: list[str] | None = None,
        supervise_every_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.count = max(0, count)
        self.devices = devices or [settings.device]
        self.processes: list[BaseProcess] = []
        self._every_s = supervise_every_s
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    @property
    def threads_per_worker(self) -> int:
        """Torch intra-op threads each worker uses."""
        return self.settings.torch_threads or max(1, (os.cpu_count() or 1) // max(self.count, 1))

    def _spawn(self, index: int) -> BaseProcess:
        settings = self.settings.model_copy(
            update={"device": self.devices[index % len(self.devices)]}
        )
        process = self._context.Process(
            target=_worker_main,
            name=f"inferprune-worker-{index}",
            args=(settings.model_dump_json(), self.threads_per_worker, os.getpid()),
            daemon=False,
        )
        process.start()
        return process

    def start(self) -> WorkerPool:
        """Start the workers and their supervisor; return self."""
        with self._lock:
            self.processes = [self._spawn(i) for i in range(self.count)]
        if self.count:
            self._supervisor = threading.Thread(
                target=self._supervise, name="worker-supervisor", daemon=True
            )
            self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(self._every_s):
            with self._lock:
                for index, process in enumerate(self.processes):
                    if process.is_alive() or self._stopping.is_set():
                        continue
                    logger.warning(
                        "worker %s exited with %s; starting a new one",
                        process.name,
                        process.exitcode,
                    )
                    self.processes[index] = self._spawn(index)

    def stop(self, *, grace_s: float = 1.0, abort_s: float = 8.0) -> None:
        """Stop every worker; return once none is left running.

        Each worker is sent SIGTERM (an idle one exits at once); after ``grace_s`` a
        second SIGTERM aborts the unit in flight, which hands its trial or finalization
        back to the queue; a worker still alive after ``abort_s`` more is killed (its
        lease then expires and another worker reaps it).
        """
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        with self._lock:
            processes = list(self.processes)
        _signal_alive(processes)
        _join_all(processes, grace_s)
        _signal_alive(processes)
        _join_all(processes, abort_s)
        for process in processes:
            if process.is_alive():
                logger.warning("worker %s did not stop; killing it", process.name)
                process.kill()
                process.join()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_alive(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _join_all(processes: list[BaseProcess], timeout_s: float) -> None:
    """Wait until every process has exited, at most ``timeout_s`` in all."""
    import time

    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
