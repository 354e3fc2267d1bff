"""Per-group sensitivity: the accuracy each group costs when it alone is narrowed.

A scan narrows one group at a time to a few widths (the rest of the model untouched),
re-estimates BatchNorm statistics exactly as a trial does before its fine-tune, and
evaluates validation accuracy: forward passes only, no training. The result (a
:class:`~search.sensitivity_record.Sensitivity`) says which groups the model can spare
channels from; :mod:`search.sensitivity_allocation` turns it into a plan at the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from models.prune import ChannelGroup, Plan
from models.train import evaluate, recalibrate_batchnorm
from search.errors import SearchError
from search.problem import PruningProblem, build_candidate
from search.sensitivity_record import GroupSensitivity, Sensitivity, SensitivityPoint

__all__ = [
    "DEFAULT_FRACTIONS",
    "SCAN_BN_BATCHES",
    "scan_sensitivity",
    "scan_widths",
]

DEFAULT_FRACTIONS = (0.75, 0.5, 0.25)
"""Kept fractions of each group's channels a scan evaluates by default."""

SCAN_BN_BATCHES = 2
"""Batches of 64 training images forwarded to re-estimate each scanned candidate's
BatchNorm statistics. Twice a classic trial's (:data:`search.objective.BN_BATCHES`): the
scan's accuracies are all its plan is allocated from, with no fine-tune after them, and
the sensitivities cached in stores and the benchmarks' plans were measured with 2."""


def scan_widths(group: ChannelGroup, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """Return the widths a scan evaluates for ``group``, widest first.

    For each fraction, the allowed width nearest ``fraction * channels`` (the narrower
    one on a tie); the full width and repeats are left out, so a group with few allowed
    widths gets fewer points (none when it cannot be narrowed).
    """
    allowed = [w for w in group.allowed_widths() if w < group.channels]
    chosen: list[int] = []
    for fraction in fractions:
        if not allowed:
            break
        target = fraction * group.channels
        width = min(allowed, key=lambda w: (abs(w - target), w))
        if width not in chosen:
            chosen.append(width)
    return sorted(chosen, reverse=True)


Progress = Callable[[int, int, str], None]
"""``on_point(done, total, group)`` after each evaluated width."""


def scan_sensitivity(
    problem: PruningProblem,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    on_point: Progress | None = None,
) -> Sensitivity:
    """Return the validation accuracy of the model with each group narrowed alone.

    Every candidate is pruned from the unpruned model with the job's channel scores,
    its BatchNorm statistics are re-estimated (:data:`SCAN_BN_BATCHES` batches, the same
    seeded batches for every candidate, so their differences are the widths'),
    and it is evaluated on the validation split. The unpruned model is recalibrated the
    same way for the reference. Nothing is trained; ``problem.model`` is not changed.

    Args:
        problem: the job's fixed inputs (its criterion, scores and space are used).
        fractions: kept fractions to evaluate per group (see :func:`scan_widths`).
        on_point: called after each evaluated width (progress).

    Returns:
        The :class:`Sensitivity`.

    Raises:
        SearchError: a fraction is not in (0, 1).
    """
    if not fractions or any(not 0.0 < f < 1.0 for f in fractions):
        raise SearchError(f"scan fractions must lie in (0, 1), got {list(fractions)}")
    started = time.perf_counter()
    seed = problem.spec.search.seed * 100_003  # the seed trial 0's recalibration uses
    plans = [(g, scan_widths(g, fractions)) for g in problem.space.groups]
    total = 1 + sum(len(widths) for _, widths in plans)

    def accuracy(plan: Plan) -> float:
        model = problem.place(build_candidate(problem, plan))
        recalibrate_batchnorm(model, problem.data.train, batches=SCAN_BN_BATCHES, seed=seed)
        return evaluate(model, problem.data.val).top1

    reference = accuracy(Plan())
    done = 1
    if on_point is not None:
        on_point(done, total, "unpruned")
    groups = []
    for group, widths in plans:
        points = []
        for width in widths:
            plan = Plan({group.name: width})
            macs = problem.space.predict(plan).macs
            points.append(SensitivityPoint(width, macs, accuracy(plan)))
            done += 1
            if on_point is not None:
                on_point(done, total, group.name)
        groups.append(GroupSensitivity(group.name, group.channels, tuple(points)))
    return Sensitivity(
        criterion=problem.spec.pruning.criterion,
        baseline_accuracy=problem.baseline.val_accuracy,
        reference_accuracy=reference,
        baseline_macs=problem.space.predict(Plan()).macs,
        fractions=tuple(float(f) for f in fractions),
        groups=tuple(groups),
        seconds=round(time.perf_counter() - started, 3),
    )
