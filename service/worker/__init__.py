"""Workers: separate processes that claim trials and finalizations from the store."""

from service.worker._worker import Worker, run_worker

__all__ = ["Worker", "run_worker"]
