"""What a trial is scored by: the objective values its study optimizes."""

from __future__ import annotations

from search.problem import PruningProblem

__all__ = ["SCALAR_EXPONENT", "objective_values", "scalar_score"]

SCALAR_EXPONENT = -0.07
"""MnasNet's soft-constraint exponent: ``score = acc * prod((cost / target) ** -0.07)``."""


def scalar_score(
    problem: PruningProblem, accuracy: float, macs: float, params: float, latency_ms: float | None
) -> float:
    """Return ``accuracy * prod((cost / target) ** SCALAR_EXPONENT)`` over limited costs."""
    score = accuracy
    budget = problem.budget
    for cost, target in (
        (macs, budget.max_macs),
        (params, budget.max_params),
        (latency_ms, budget.max_latency_ms),
    ):
        if target is not None and cost is not None and cost > 0:
            score *= (cost / target) ** SCALAR_EXPONENT
    return score


def objective_values(
    problem: PruningProblem, accuracy: float, macs: int, params: int, latency_ms: float | None
) -> tuple[float, ...]:
    """Return the values a trial reports to its study, one per objective
    (:func:`search.spec.directions`): accuracy, MACs ratio (and latency) for ``pareto``;
    the :func:`scalar_score` for ``scalar``; accuracy for ``constrained`` (the MACs ratio,
    minimized, where the budget limits no resource)."""
    spec = problem.spec
    macs_ratio = macs / problem.baseline.cost.macs
    if spec.objective == "pareto":
        values: tuple[float, ...] = (accuracy, macs_ratio)
        if spec.measures_latency:
            values += (latency_ms if latency_ms is not None else float("inf"),)
        return values
    if spec.objective == "scalar":
        return (scalar_score(problem, accuracy, macs, params, latency_ms),)
    if not spec.budget.has_resource_limit:
        return (macs_ratio,)
    return (accuracy,)
