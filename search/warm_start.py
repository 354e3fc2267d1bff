"""The plans a new study tries first: the uniform plan, and the budget allocated by
per-group sensitivity.

The uniform plan at the budget (Torch-Pruning's ``pruning_ratio``) is the usual one-shot
baseline; as the first trial it keeps the search from delivering worse than that
baseline would with the same compute. With ``search.compute_epochs`` a second plan
allocates the budget by a sensitivity scan (forward passes only, as AIMET's greedy ratio
selection and ModelOpt's FastNAS do): the groups whose narrowing costs the least
accuracy per MAC saved give up the most. A scan depends on the weights and data, not on
the budget, so it is cached (:class:`SensitivityCache`): the service keeps it in its
store, and the next job on the same model reuses it.
"""

from __future__ import annotations

import logging
from typing import Protocol

from models.prune import Plan, uniform_plan
from search.problem import PruningProblem
from search.sensitivity import (
    DEFAULT_FRACTIONS,
    Sensitivity,
    allocate_by_sensitivity,
    scan_sensitivity,
)

__all__ = ["SensitivityCache", "job_sensitivity", "warm_start_plans"]

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


def warm_start_plans(problem: PruningProblem, sensitivity: Sensitivity | None = None) -> list[Plan]:
    """Return the plans to try first: the uniform plan at the budget (or at half width
    without a MACs or parameter limit), then, given a scan, the budget allocated by
    sensitivity when it differs."""
    budget = problem.budget
    if budget.max_macs is None and budget.max_params is None:
        return [uniform_plan(problem.graph, 0.5)]
    plans = [problem.space.uniform_at_budget()]
    if sensitivity is not None:
        allocated = allocate_by_sensitivity(sensitivity, problem.space)
        if allocated.to_dict() != plans[0].to_dict():
            plans.append(allocated)
    return plans
