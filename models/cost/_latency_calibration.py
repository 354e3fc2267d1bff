"""Calibrating a latency table on a few plans measured end to end: which plans, and the fit."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ModelsError
from models.prune import PruningGraph

__all__ = ["Calibration", "calibration_plans", "fit_calibration"]

_LEVELS = ((0.2, 1.0), (1.0, 0.2), (0.5, 0.5), (0.3, 0.7), (0.7, 0.3), (0.15, 0.15), (0.8, 0.8))
"""(keep fraction of the first group, of the last) of successive calibration plans."""


@dataclass(frozen=True)
class Calibration:
    """How a network's measured latency relates to its table's kernel sum.

    ``latency ≈ scale * kernels_ms + per_mb * weight_mb + offset_ms``: ``scale``
    absorbs how differently kernels run inside the network than alone, ``per_mb`` the
    time to stream spatial convolutions' weights, which stay cached when a kernel is
    timed alone but come from a slower cache level (or memory) inside a network, and
    ``offset_ms`` the per-run work no kernel accounts for (the executor, ops the table
    does not time).

    Attributes:
        scale: multiplies the kernel sum.
        per_mb: ms per MiB of spatial convolutions' weights (as onnxruntime pads them).
        offset_ms: added once.
        samples: plans it was fitted on (0: not calibrated).
    """

    scale: float = 1.0
    per_mb: float = 0.0
    offset_ms: float = 0.0
    samples: int = 0

    def apply(self, kernels_ms: float, weight_mb: float) -> float:
        """Return the calibrated latency of a plan from its kernel sum and weights."""
        return self.scale * kernels_ms + self.per_mb * weight_mb + self.offset_ms


def fit_calibration(
    kernels_ms: Sequence[float], weight_mb: Sequence[float], measured_ms: Sequence[float]
) -> Calibration:
    """Return the :class:`Calibration` that best explains measured plans.

    Least squares on the relative error (each plan weighted by 1 / measured, so small
    and large plans count alike). Five or more plans fit all three terms; two to four
    fit ``scale`` and ``offset_ms``; one fits ``scale``. A term that comes out negative
    (noise on too few or too similar plans) is dropped and the rest refitted.

    Args:
        kernels_ms: each plan's kernel sum (``LatencyTable.predict_raw``).
        weight_mb: each plan's weights in MiB.
        measured_ms: each plan's measured median latency.

    Returns:
        The calibration.

    Raises:
        ModelsError: no plans, lengths that differ, or a non-positive value.
    """
    x = np.asarray(kernels_ms, dtype=np.float64)
    w = np.asarray(weight_mb, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    if not len(y) or not len(x) == len(w) == len(y):
        raise ModelsError("calibration needs one kernel sum, weight size and latency per plan")
    if (y <= 0).any() or (x <= 0).any():
        raise ModelsError("calibration latencies must be positive")
    columns = {"scale": x / y, "per_mb": w / y, "offset_ms": 1.0 / y}
    terms = ["scale", "per_mb", "offset_ms"] if len(y) >= 5 else ["scale", "offset_ms"]
    terms = terms if len(y) >= 2 else ["scale"]
    while True:
        design = np.stack([columns[t] for t in terms], axis=1)
        solution, *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
        fitted = dict(zip(terms, (float(v) for v in solution), strict=True))
        negative = [t for t in terms if fitted[t] < 0 and t != "scale"]
        if fitted["scale"] <= 0 and len(terms) > 1:
            negative = [terms[-1]]
        if not negative:
            return Calibration(samples=len(y), **fitted)
        terms = [t for t in terms if t != negative[0]]


def calibration_plans(graph: PruningGraph, count: int, seed: int) -> list[dict[str, int]]:
    """Return ``count`` plans to measure end to end for ``LatencyTable.fit``.

    The first is the unpruned model. The others keep between 15 % and all of the
    channels, with the keep fraction ramping from the first group to the last (up,
    down or flat, by turns), so that the kernel sum and the weights (mostly in the last
    layers) vary apart and the fit can tell them apart; each group's width is jittered
    by up to ±40 %, so that widths on and off onnxruntime's channel block both occur.

    Args:
        graph: the model's pruning graph.
        count: how many plans (at least 1).
        seed: seeds the jitter; the same seed gives the same plans.

    Returns:
        The plans, as ``{group: width}`` dicts naming every group.

    Raises:
        ModelsError: ``count`` is below 1.
    """
    if count < 1:
        raise ModelsError(f"calibration needs at least one plan, got {count}")
    rng = random.Random(seed)
    plans = [{g.name: g.channels for g in graph.groups}]
    last = max(len(graph.groups) - 1, 1)
    for j in range(1, count):
        first, final = _LEVELS[(j - 1) % len(_LEVELS)]
        plan = {}
        for i, g in enumerate(graph.groups):
            level = first + (final - first) * i / last
            target = min(1.0, level * rng.uniform(0.6, 1.4)) * g.channels
            plan[g.name] = _nearest(g.allowed_widths(), target)
        plans.append(plan)
    return plans


def _nearest(widths: list[int], target: float) -> int:
    return min(widths, key=lambda w: abs(w - target))
