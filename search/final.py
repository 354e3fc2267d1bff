"""The chosen plan, trained properly: longer fine-tune, test accuracy, latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from models.cost import Cost, Latency, measure_cost
from models.prune import Plan
from models.train import TrainProgress, evaluate, fine_tune, recalibrate_batchnorm
from search.objective import build_candidate
from search.problem import PruningProblem

__all__ = ["FinalModel", "Measured", "finalize", "measure_baseline"]


@dataclass(frozen=True)
class Measured:
    """A model's cost, latency and accuracy as reports show it."""

    cost: Cost
    latency: Latency
    val_accuracy: float
    test_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """Return report JSON (``latency_ms`` is the median, beside ``latency_p90_ms``)."""
        return {
            "macs": self.cost.macs,
            "params": self.cost.params,
            "size_bytes": self.cost.size_bytes,
            "latency_ms": self.latency.median_ms,
            "latency_p90_ms": self.latency.p90_ms,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
        }


@dataclass(frozen=True)
class FinalModel:
    """The finalized pruned model and what it measured."""

    model: nn.Module
    plan: Plan
    trial: int
    measured: Measured
    search_val_accuracy: float | None
    seconds: float


def measure_baseline(problem: PruningProblem) -> Measured:
    """Return the unpruned model's cost, latency, and val/test accuracy."""
    latency = problem.baseline.latency or problem.measure_latency(problem.model)
    return Measured(
        cost=problem.baseline.cost,
        latency=latency,
        val_accuracy=problem.baseline.val_accuracy,
        test_accuracy=evaluate(problem.model, problem.data.test).top1,
    )


def finalize(
    problem: PruningProblem,
    plan: Plan,
    trial: int,
    *,
    search_val_accuracy: float | None = None,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinalModel:
    """Rebuild ``plan``, fine-tune it for ``final_epochs`` and measure it on the test split.

    The test split is used here for the first time: the search chose on validation
    accuracy only. With ``finetune.distill`` the unpruned model teaches the pruned one.
    """
    spec = problem.spec
    started = time.perf_counter()
    seed = spec.search.seed * 100_003 + trial
    model = build_candidate(problem, plan)
    recalibrate_batchnorm(model, problem.data.train, seed=seed)
    if spec.finetune.final_epochs > 0:
        fine_tune(
            model,
            problem.data.train,
            epochs=spec.finetune.final_epochs,
            lr=spec.finetune.lr,
            batch_size=spec.finetune.batch_size,
            seed=seed,
            teacher=problem.model if spec.finetune.distill else None,
            on_step=on_step,
            should_stop=should_stop,
        )
    measured = Measured(
        cost=measure_cost(model, problem.input_shape),
        latency=problem.measure_latency(model),
        val_accuracy=evaluate(model, problem.data.val).top1,
        test_accuracy=evaluate(model, problem.data.test).top1,
    )
    return FinalModel(
        model=model,
        plan=plan,
        trial=trial,
        measured=measured,
        search_val_accuracy=search_val_accuracy,
        seconds=time.perf_counter() - started,
    )
