"""Whether any pruning plan can meet a spec's MACs / parameter budget, known at upload.

Only the analytic cost model is used (no data, no training), so the answer takes about
as long as tracing the model once. Latency limits are measured by the workers and are
not checked here.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.spec import JobSpec
from service.uploads._errors import UploadError
from service.uploads._model_size import MAX_MODEL_BYTES
from service.uploads._weights import open_model

__all__ = ["BudgetCheck", "validate_budget"]


@dataclass(frozen=True)
class BudgetCheck:
    """The unpruned model's cost and the cheapest plan the search can reach.

    Attributes:
        baseline_macs: MACs of the unpruned model at batch 1.
        baseline_params: its parameters.
        smallest_macs: MACs of the plan keeping every group at its minimum width.
        smallest_params: parameters of that plan.
        smallest_fraction: ``smallest_macs / baseline_macs``: the lowest ``budget.flops``
            that can be met.
        max_macs: the budget's MACs limit in absolute units, or None.
        max_params: the budget's parameter limit in absolute units, or None.
        num_groups: prunable channel groups (the search's dimensions).
    """

    baseline_macs: int
    baseline_params: int
    smallest_macs: int
    smallest_params: int
    smallest_fraction: float
    max_macs: int | None
    max_params: int | None
    num_groups: int


def validate_budget(
    spec: JobSpec,
    weights: bytes | None,
    *,
    num_classes: int | None = None,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> BudgetCheck:
    """Return the spec model's cost range, after checking its budget can be met.

    Builds the model (with ``weights`` when given, else randomly initialised), its
    pruning graph under ``spec.pruning`` (``round_to``, ``ignored_layers``) and the
    analytic cost model, then compares the cheapest reachable plan with
    ``budget.flops`` / ``budget.macs`` / ``budget.params``.

    Args:
        spec: the job's spec.
        weights: the uploaded weights, or None.
        num_classes: classes to assume when neither the spec nor the weights say (for
            example an uploaded data set's); the architecture's default otherwise.
        max_model_bytes: the most memory the model may need, checked before it is
            built (see :func:`~service.uploads.check_model_size`).

    Returns:
        The :class:`BudgetCheck`.

    Raises:
        UploadError: ``budget_unreachable`` when even the smallest plan breaks the
            budget (the message gives its MACs as a count and as a fraction of the
            original, and the lowest ``budget.flops`` that works); ``invalid_spec`` when
            ``pruning.ignored_layers`` names unknown layers or the model cannot be traced;
            the weights codes of :func:`validate_weights` (``model_too_large``
            included).
    """
    from models.cost import AnalyticCost
    from models.errors import ModelsError
    from models.prune import build_pruning_graph
    from search.budget import resolve_budget
    from search.errors import BudgetUnreachableError
    from search.space import SearchSpace

    opened = open_model(spec, weights, num_classes=num_classes, max_model_bytes=max_model_bytes)
    try:
        graph = build_pruning_graph(
            opened.model,
            opened.input_shape,
            round_to=spec.pruning.round_to,
            ignored_layers=spec.pruning.ignored_layers,
        )
        cost = AnalyticCost(opened.model, graph)
    except ModelsError as exc:
        raise UploadError("invalid_spec", str(exc)) from None
    budget = resolve_budget(spec.budget, cost.baseline, None)
    space = SearchSpace(graph, cost, budget, depth=spec.searches_depth)
    floor = cost.predict(space.smallest())
    base = cost.baseline
    try:
        space.check_reachable()
    except BudgetUnreachableError as exc:
        raise UploadError(
            "budget_unreachable", f"no pruning plan can meet the budget: {exc}"
        ) from None
    return BudgetCheck(
        baseline_macs=base.macs,
        baseline_params=base.params,
        smallest_macs=floor.macs,
        smallest_params=floor.params,
        smallest_fraction=floor.macs / base.macs if base.macs else 1.0,
        max_macs=budget.max_macs,
        max_params=budget.max_params,
        num_groups=len(space.groups),
    )
