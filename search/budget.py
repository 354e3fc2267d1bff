"""A job's budget in absolute units, and how far a candidate is from meeting it."""

from __future__ import annotations

from dataclasses import dataclass

from models.cost import Cost
from search.spec import Budget

__all__ = ["ResolvedBudget", "resolve_budget"]


@dataclass(frozen=True)
class ResolvedBudget:
    """Limits in absolute units; None means unlimited.

    Attributes:
        max_macs: MACs at batch 1.
        max_params: parameter count.
        max_latency_ms: median latency in milliseconds.
        min_accuracy: lowest acceptable validation top-1 accuracy (baseline minus the
            allowed drop).
    """

    max_macs: int | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None

    def admits_cost(self, cost: Cost) -> bool:
        """Return whether MACs and parameters are within the limits."""
        return (self.max_macs is None or cost.macs <= self.max_macs) and (
            self.max_params is None or cost.params <= self.max_params
        )

    def constraints(
        self, *, macs: float, params: float, latency_ms: float | None, accuracy: float | None
    ) -> dict[str, float]:
        """Return Optuna constraint values (feasible when all are <= 0).

        Each is relative: ``macs / max_macs - 1`` and so on, and for accuracy
        ``min_accuracy - accuracy``; a missing measurement of a limited quantity counts as
        violated.
        """
        out: dict[str, float] = {}
        if self.max_macs is not None:
            out["macs"] = macs / self.max_macs - 1.0
        if self.max_params is not None:
            out["params"] = params / self.max_params - 1.0
        if self.max_latency_ms is not None:
            out["latency"] = 1.0 if latency_ms is None else latency_ms / self.max_latency_ms - 1.0
        if self.min_accuracy is not None:
            out["accuracy"] = 1.0 if accuracy is None else self.min_accuracy - accuracy
        return out

    def to_dict(self) -> dict[str, float | int | None]:
        """Return the limits as JSON data."""
        return {
            "max_macs": self.max_macs,
            "max_params": self.max_params,
            "max_latency_ms": self.max_latency_ms,
            "min_accuracy": self.min_accuracy,
        }


def resolve_budget(
    budget: Budget, baseline: Cost, baseline_accuracy: float | None
) -> ResolvedBudget:
    """Turn fractions into absolute limits against the unpruned model's cost."""
    macs_limits = []
    if budget.flops is not None:
        macs_limits.append(int(budget.flops * baseline.macs))
    if budget.macs is not None:
        macs_limits.append(int(budget.macs))
    max_params = None
    if budget.params is not None:
        max_params = (
            int(budget.params * baseline.params) if budget.params <= 1 else int(budget.params)
        )
    min_accuracy = None
    if budget.max_accuracy_drop is not None and baseline_accuracy is not None:
        min_accuracy = baseline_accuracy - budget.max_accuracy_drop
    return ResolvedBudget(
        max_macs=min(macs_limits) if macs_limits else None,
        max_params=max_params,
        max_latency_ms=budget.latency_ms,
        min_accuracy=min_accuracy,
    )
