"""What a latency measurement is: the record, and the statistics of timed runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Latency", "latency_of_runs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass, over repeated timed runs.

    Attributes:
        median_ms: median over the timed runs, in milliseconds.
        p10_ms: 10th percentile (numpy's linear interpolation), in milliseconds.
        p90_ms: 90th percentile, in milliseconds.
        mean_ms: mean over the timed runs, in milliseconds.
        min_ms: fastest timed run, in milliseconds.
        backend: ``"torch"`` or ``"onnxruntime"``.
        threads: intra-op threads the backend was limited to.
        batch_size: inputs per forward pass.
        repeats: timed runs.
        warmup: untimed runs before the timed ones.
        device: where it was measured: ``cpu``, or ``cuda:N (GPU name)``.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    backend: str
    threads: int
    batch_size: int
    repeats: int
    warmup: int
    device: str = "cpu"

    def to_dict(self) -> dict[str, float]:
        """Return the statistics in milliseconds, keyed as ``latency_ms`` in reports.

        Returns:
            ``{"median", "p10", "p90", "mean", "min"}`` in milliseconds; the settings
            (backend, threads, ...) stay attributes.
        """
        return {
            "median": self.median_ms,
            "p10": self.p10_ms,
            "p90": self.p90_ms,
            "mean": self.mean_ms,
            "min": self.min_ms,
        }


def latency_of_runs(
    durations: np.ndarray, backend: str, threads: int, batch_size: int, warmup: int, device: str
) -> Latency:
    """Return the :class:`Latency` of timed runs.

    Args:
        durations: each timed run, in ms.
        backend: ``torch`` or ``onnxruntime``.
        threads: intra-op threads the backend was limited to.
        batch_size: inputs per run.
        warmup: untimed runs before them.
        device: where they ran.

    Returns:
        Their median, p10, p90, mean and minimum with the settings.
    """
    p10, median, p90 = (float(v) for v in np.percentile(durations, [10, 50, 90]))
    logger.debug("latency %s: median %.3f ms (p10 %.3f, p90 %.3f)", backend, median, p10, p90)
    return Latency(
        median_ms=median,
        p10_ms=p10,
        p90_ms=p90,
        mean_ms=float(durations.mean()),
        min_ms=float(durations.min()),
        backend=backend,
        threads=threads,
        batch_size=batch_size,
        repeats=len(durations),
        warmup=warmup,
        device=device,
    )
