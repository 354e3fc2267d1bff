"""The plans a new study tries first: the one-shot baselines' own choices.

The uniform plan at the budget (Torch-Pruning's ``pruning_ratio``) is the usual one-shot
baseline; as the first trial it keeps the search from delivering worse than that
baseline would with the same compute. With ``search.compute_epochs`` two more follow:
the widths Torch-Pruning's global magnitude pruner keeps at the budget
(:func:`global_magnitude_plan`), and the budget allocated by a sensitivity scan (forward
passes only, as AIMET's greedy ratio selection and ModelOpt's FastNAS do: the groups
whose narrowing costs the least accuracy per MAC saved give up the most). A scan
depends on the weights and data, not on the budget, so it is cached
(:class:`SensitivityCache`): the service keeps it in its store, and the next job on the
same model reuses it. When the search removes blocks too (``pruning.depth``), a fourth
follows: half of each stage's removable blocks removed (those that change their input
the least: ``SearchSpace.removal``), and the uniform widths that fit the budget with
them gone (a shallower, wider network at the same MACs).
"""

from __future__ import annotations

import logging
from typing import Protocol

from models.prune import Plan, global_magnitude_widths, uniform_plan
from search.fidelity import REFERENCE_KINDS
from search.problem import PruningProblem
from search.sensitivity import DEFAULT_FRACTIONS, scan_sensitivity
from search.sensitivity_allocation import allocate_by_sensitivity
from search.sensitivity_record import Sensitivity

__all__ = [
    "GLOBAL_RATIOS",
    "WARM_STARTS",
    "SensitivityCache",
    "global_magnitude_plan",
    "job_sensitivity",
    "warm_start_plans",
]

WARM_STARTS = REFERENCE_KINDS
"""The kinds of warm-start plan, in the order a study tries them (defined beside the
fidelity plan, which counts them without importing torch)."""

_RATIO_STEP = 0.05
GLOBAL_RATIOS = tuple(step * _RATIO_STEP for step in range(1, round(1 / _RATIO_STEP)))
"""Torch-Pruning ratios :func:`global_magnitude_plan` scans upward (0.05 to 0.95) for the
first whose widths fit the budget."""
_RATIO_BISECTIONS = 10

logger = logging.getLogger(__name__)


class SensitivityCache(Protocol):
    """Where a job's sensitivity scan is kept between jobs.

    The cache is bound to what a scan depends on (weights, data, criterion, channel step,
    seed, fractions): ``get`` returns the stored scan's JSON or None; ``put`` stores one
    unless a scan is stored already (the first stays).
    """

    def get(self) -> dict[str, object] | None:
        """Return the stored scan, or None."""
        ...

    def put(self, scan: dict[str, object]) -> None:
        """Store ``scan`` unless one is stored already."""
        ...


def job_sensitivity(
    problem: PruningProblem, cache: SensitivityCache | None = None
) -> Sensitivity | None:
    """Return the job's sensitivity scan for its warm start, scanning only on a cache miss.

    None for jobs that do not use one: without ``compute_epochs``, or a model that starts
    from random weights (whose sensitivity says nothing). A cached scan is validated on
    load; one that does not parse is scanned again.
    """
    if problem.fidelity is None or not problem.pretrained:
        return None
    if cache is not None and (stored := cache.get()) is not None:
        try:
            scan = Sensitivity.from_dict(stored)
        except Exception as exc:  # the store keeps JSON, not trust
            logger.warning("ignoring a cached sensitivity scan: %s", exc)
        else:
            if len(scan.groups) == len(problem.space.groups):
                return scan
    scan = scan_sensitivity(problem, fractions=DEFAULT_FRACTIONS)
    logger.info("sensitivity scan of %d groups in %.1f s", len(scan.groups), scan.seconds)
    if cache is not None:
        cache.put(scan.to_dict())
    return scan


def global_magnitude_plan(problem: PruningProblem) -> Plan | None:
    """Return the widths of Torch-Pruning's global magnitude pruner at the smallest
    ``pruning_ratio`` that meets the budget, or None if no ratio does.

    MACs fall with the ratio only up to a point: past it, whole groups drop below the
    global threshold and Torch-Pruning keeps such a group whole rather than empty. So the
    ratio is scanned upward in steps of 0.05 to the first that fits, then bisected below
    it (at most 30 prunings of a copy; nothing is trained).
    """
    ignored = problem.spec.pruning.ignored_layers

    def widths(ratio: float) -> Plan:
        return global_magnitude_widths(problem.model, problem.graph, ratio, ignored_layers=ignored)

    low, fitting = 0.0, None
    for ratio in GLOBAL_RATIOS:
        plan = widths(ratio)
        if problem.space.fits(plan):
            fitting = (ratio, plan)
            break
        low = ratio
    if fitting is None:
        return None
    high, best = fitting
    for _ in range(_RATIO_BISECTIONS):
        mid = (low + high) / 2
        plan = widths(mid)
        if problem.space.fits(plan):
            high, best = mid, plan
        else:
            low = mid
    return best


def warm_start_plans(
    problem: PruningProblem, sensitivity: Sensitivity | None = None
) -> list[tuple[str, Plan]]:
    """Return the plans to try first, each with its kind (one of :data:`WARM_STARTS`).

    The uniform plan at the budget (or at half width without a MACs or parameter limit);
    with ``compute_epochs``, also the global magnitude pruner's widths, given a scan the
    budget allocated by sensitivity, and with depth the uniform plan of the model with
    half of each stage's blocks removed; a plan equal to an earlier one is left out.
    """
    budget = problem.budget
    if budget.max_macs is None and budget.max_params is None:
        return [("uniform", uniform_plan(problem.graph, 0.5))]
    plans: list[tuple[str, Plan | None]] = [("uniform", problem.space.uniform_at_budget())]
    if problem.fidelity is not None:
        plans.append(("global", global_magnitude_plan(problem)))
    if sensitivity is not None:
        plans.append(("sensitivity", allocate_by_sensitivity(sensitivity, problem.space)))
    if problem.fidelity is not None and problem.space.stages:
        half = {stage: len(blocks) // 2 for stage, blocks in problem.space.stages.items()}
        plans.append(("depth", problem.space.uniform_at_depth(problem.space.removal(half))))
    unique: list[tuple[str, Plan]] = []
    for kind, plan in plans:
        if plan is not None and all(plan.to_dict() != p.to_dict() for _, p in unique):
            unique.append((kind, plan))
    return unique
