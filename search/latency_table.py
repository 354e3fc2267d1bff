"""Latency predicted from the target device's layer table (``latency.predictor: table``).

Measuring every candidate end to end costs a device round trip each. With the table,
the device times each distinct layer configuration the width grid can produce once (one
request), plus a few whole pruned models to calibrate the sum (see
:class:`models.cost.LatencyTable`); from then on a plan's latency is a lookup. The
search projects sampled plans onto the latency budget with it, as it does for MACs, and
trials record the prediction (``latency_source: table``). What a user gets is measured
end to end: the candidate delivered (the best whose *measured* latency meets the
budget) and the Pareto front (:func:`confirm_front`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import nn

from models.io import onnx_model_bytes
from models.prune import Plan, PruningGraph, apply_plan, has_recurrent_weights
from search.errors import BudgetUnreachableError, SpecError
from search.latency import LatencyMeter
from search.spec import LatencySettings

if TYPE_CHECKING:
    from models.cost import LatencyTable
    from search.pareto import ParetoPoint
    from search.problem import PruningProblem

__all__ = [
    "CALIBRATION_PLANS",
    "MARGIN",
    "MAX_CONFIRMATIONS",
    "MAX_NARROWINGS",
    "build_latency_table",
    "budget_predictor",
    "confirm_delivered",
    "confirm_front",
]

logger = logging.getLogger(__name__)

CALIBRATION_PLANS = 6
"""Whole pruned models (the unpruned one among them) measured end to end to fit the
table's per-network correction."""

MAX_CONFIRMATIONS = 8
"""Candidates measured end to end, in order of preference, to find one whose measured
latency meets the budget before the job narrows the best of them instead."""

MARGIN = 0.05
"""Sampled plans are projected onto the latency budget less this share: the table's
predictions are within a few per cent of what the device measures (`latency_table.md`),
and a plan projected exactly onto the budget would miss it half the time."""

MAX_NARROWINGS = 6
"""Times the best candidate is narrowed (and measured again) when no candidate the
table allowed measures within the budget."""


def build_latency_table(
    model: nn.Module,
    graph: PruningGraph,
    meter: LatencyMeter,
    settings: LatencySettings,
    *,
    seed: int,
) -> LatencyTable:
    """Return the calibrated layer latency table of ``model`` on ``meter``'s device.

    Two requests to the meter: every distinct layer configuration (one-layer ONNX models),
    then :data:`CALIBRATION_PLANS` whole pruned models for the fit. On a device agent
    both are cached per device, so a second job on the same model measures nothing.

    Raises:
        SpecError: ``model`` has recurrent layers, which the table cannot time (it
            knows convolutions and linear layers).
    """
    from models.cost import LatencyTable, calibration_plans

    if has_recurrent_weights(model):
        # refused, not guessed: the table would leave the LSTM/GRU nodes untimed and
        # predict the linear head's latency alone
        raise SpecError(
            "latency.predictor: the layer latency table cannot time LSTM/GRU "
            "layers (it knows convolutions and linear layers); measure a sequence model's "
            "latency end to end: set latency.predictor to measure",
            fields=("latency.predictor",),
        )

    started = time.perf_counter()

    def timer(models: Sequence[bytes]) -> list[float]:
        return [latency.median_ms for latency in meter.measure_onnx(list(models))]

    table = LatencyTable.build(
        model, graph, timer, batch_size=settings.batch_size, channel_block=meter.channel_block
    )
    plans = calibration_plans(graph, CALIBRATION_PLANS, seed)
    exported = [
        onnx_model_bytes(
            apply_plan(model, Plan(plan), "l1", input_shape=graph.input_shape, graph=graph),
            graph.input_shape,
        )
        for plan in plans
    ]
    measured = timer(exported)
    fitted = table.fit(list(zip(plans, measured, strict=True)))
    logger.info(
        "latency table for %s built in %.1f s (%d calibration models)",
        meter.where,
        time.perf_counter() - started,
        len(plans),
    )
    return fitted


def budget_predictor(table: LatencyTable) -> Callable[[Mapping[str, int]], float]:
    """Return what the search space projects with: the table's prediction plus
    :data:`MARGIN`, so that projected plans land safely inside the budget."""

    def predict(plan: Mapping[str, int]) -> float:
        return table.predict(plan) * (1.0 + MARGIN)

    return predict


def _measure_plan(problem: PruningProblem, plan: Mapping[str, int]) -> float:
    """Return the end-to-end median latency of ``plan``'s structure (weights do not
    change latency, so the candidate is pruned afresh, not trained)."""
    from search.problem import build_candidate

    return problem.measure_latency(build_candidate(problem, Plan(dict(plan)))).median_ms


def confirm_delivered(
    problem: PruningProblem, ranked: Sequence[ParetoPoint]
) -> tuple[ParetoPoint | None, list[dict[str, Any]]]:
    """Return the first of ``ranked`` (best first) whose end-to-end latency meets the
    budget, with its measured latency, and every confirmation made.

    At most :data:`MAX_CONFIRMATIONS` are measured. If none meets the budget, the best
    is narrowed: projected by the table onto a budget lowered by what it measured over,
    and measured again, up to :data:`MAX_NARROWINGS` times; the point returned then has
    the narrower plan (its trial's weights no longer fit it: it is pruned afresh) and
    ``reshaped`` checks. Only if that fails too is the fastest measured returned (its
    report then says it is over).
    """
    limit = problem.budget.max_latency_ms
    confirmations: list[dict[str, Any]] = []
    fastest: ParetoPoint | None = None
    for point in ranked[:MAX_CONFIRMATIONS]:
        measured = _measure_plan(problem, point.plan)
        confirmations.append(
            {"trial": point.trial, "predicted_ms": point.latency_ms, "measured_ms": measured}
        )
        confirmed = replace(point, latency_ms=measured, latency_source="measured")
        if limit is None or measured <= limit:
            return confirmed, confirmations
        if fastest is None or measured < (fastest.latency_ms or float("inf")):
            fastest = confirmed
        logger.info(
            "trial %d: predicted %.3f ms, measured %.3f ms on %s, over the %.3f ms budget",
            point.trial,
            point.latency_ms or float("nan"),
            measured,
            problem.latency_meter.where,
            limit,
        )
    if limit is not None and ranked and fastest is not None:
        narrowed = _narrow(problem, ranked[0], limit, confirmations)
        if narrowed is not None:
            return narrowed, confirmations
    return fastest, confirmations


def _narrow(
    problem: PruningProblem, point: ParetoPoint, limit: float, checks: list[dict[str, Any]]
) -> ParetoPoint | None:
    """Return ``point`` narrowed until its plan measures within ``limit``, or None."""
    from search.space import SearchSpace

    table = problem.latency_table
    assert table is not None
    plan: dict[str, int] = dict(point.plan)
    measured = next(c["measured_ms"] for c in checks if c["trial"] == point.trial)
    target = limit
    for _ in range(MAX_NARROWINGS):
        target *= min(0.97, limit / measured)  # aim below by what it measured over
        budget = replace(problem.budget, max_latency_ms=target)
        space = SearchSpace(problem.graph, problem.cost, budget, latency=table.predict)
        try:
            plan = space.project(plan).to_dict()
        except BudgetUnreachableError:
            return None
        measured = _measure_plan(problem, plan)
        checks.append(
            {
                "trial": point.trial,
                "predicted_ms": table.predict(plan),
                "measured_ms": measured,
                "reshaped": True,
            }
        )
        if measured <= limit:
            logger.info(
                "trial %d narrowed to %.3f ms measured on %s (budget %.3f ms)",
                point.trial,
                measured,
                problem.latency_meter.where,
                limit,
            )
            return replace(point, plan=plan, latency_ms=measured, latency_source="measured")
    return None


def confirm_front(problem: PruningProblem, front: Sequence[ParetoPoint]) -> dict[int, float]:
    """Return the end-to-end median latency of every front point, by trial number."""
    return {point.trial: _measure_plan(problem, point.plan) for point in front}
