"""The chosen plan, trained properly: longer fine-tune, test accuracy, latency."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from models.cost import Cost, Latency
from models.prune import Plan, widths_of
from models.train import (
    TrainProgress,
    evaluate,
    recalibrate_batchnorm,
    steps_per_epoch,
    total_steps,
)
from search.checkpoints import Lineage, restore_candidate
from search.hybrid import has_kernel_steps, measure_candidate_cost, sparse_record
from search.problem import PruningProblem, build_candidate
from search.rungs import envelope_lr, rung_steps, train_segment
from search.scheduled import train_scheduled

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
            **sparse_record(self.cost),  # a hybrid sequence's kernel steps
            "size_bytes": self.cost.size_bytes,
            "latency_ms": self.latency.median_ms,
            "latency_p90_ms": self.latency.p90_ms,
            "latency_device": self.latency.device,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
        }


@dataclass(frozen=True)
class FinalModel:
    """The finalized pruned model and what it measured.

    Attributes:
        lineage: its whole training since pruning, the search's rungs included.
        continued: it continued a search candidate's weights (else it was pruned afresh).
        schedule: how the final fine-tune reached the plan: ``{"name": "one_shot"}``, or
            a schedule's record (:meth:`models.schedules.ScheduledModel.to_dict`).
    """

    model: nn.Module
    plan: Plan
    trial: int
    measured: Measured
    search_val_accuracy: float | None
    seconds: float
    lineage: Lineage
    continued: bool = False
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "one_shot"})

    @property
    def final_epochs(self) -> float:
        """Epochs the final fine-tune itself trained."""
        return float(self.lineage.history[-1]["epochs"]) if self.lineage.history else 0.0


def measure_baseline(problem: PruningProblem) -> Measured:
    """Return the unpruned model's cost, latency, and val/test accuracy."""
    latency = problem.baseline.latency or problem.measure_latency(problem.model)
    return Measured(
        cost=problem.baseline.cost,
        latency=latency,
        val_accuracy=problem.baseline.val_accuracy,
        test_accuracy=evaluate(problem.teacher, problem.data.test).top1,
    )


def finalize(
    problem: PruningProblem,
    plan: Plan,
    trial: int,
    *,
    search_val_accuracy: float | None = None,
    checkpoint: bytes | None = None,
    spent_epochs: float = 0.0,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinalModel:
    """Train the chosen candidate into the delivered model and measure it on the test split.

    With ``search.compute_epochs`` and the candidate's last-rung ``checkpoint``, the
    candidate trains on from its own weights and step, from the height of the rungs'
    learning-rate envelope, for all the compute the search left
    (``compute_epochs - spent_epochs``: the fidelity plan's ``final_epochs`` in total
    when the search spent what it planned, more when it spent less). Otherwise ``plan``
    is pruned afresh and fine-tuned ``finetune.final_epochs``: at once, or along
    ``pruning.schedule`` over the fine-tune (ending at the plan's widths exactly). The
    test split is used here for the first time: the search chose on validation accuracy
    only. With distillation (``finetune.distill``; on by default with
    ``compute_epochs``) the unpruned model teaches the pruned one.

    Args:
        problem: the job's fixed inputs.
        plan: the chosen plan.
        trial: the chosen trial.
        search_val_accuracy: its validation accuracy during the search (for the report).
        checkpoint: the chosen candidate's last-rung checkpoint, when there is one.
        spent_epochs: epochs every trial of the search trained together.
        on_step: progress of the fine-tune.
        should_stop: polled between steps.
    """
    spec = problem.spec
    started = time.perf_counter()
    seed = spec.search.seed * 100_003 + trial
    fidelity = problem.fidelity
    per_epoch = steps_per_epoch(len(problem.data.train), spec.finetune.batch_size)
    schedule: dict[str, Any] = {"name": "one_shot"}
    if fidelity is not None and checkpoint is not None:
        model, plan, lineage = restore_candidate(problem, checkpoint)
        problem.place(model)
        _, horizon = rung_steps(problem, fidelity)
        # everything the search left: the planned final length, or more if it spent less
        steps = max(0, math.floor((fidelity.compute_epochs - spent_epochs) * per_epoch + 1e-6))
        lr = envelope_lr(spec.finetune.lr, lineage.steps, horizon)
    else:
        lineage = Lineage(trial)
        epochs = spec.finetune.final_epochs
        if fidelity is not None:  # pruned afresh in a compute budget: all that is left
            epochs = max(fidelity.compute_epochs - spent_epochs, 0.0)
        steps = total_steps(epochs, None, per_epoch) if epochs > 0 else 0
        lr = spec.finetune.lr
        if spec.pruning.schedule != "one_shot":
            scheduled = train_scheduled(
                problem, plan, lineage, steps, lr, seed, on_step=on_step, should_stop=should_stop
            )
            model, schedule = scheduled.model, scheduled.to_dict()
        else:
            model = problem.place(build_candidate(problem, plan))
            recalibrate_batchnorm(model, problem.data.train, seed=seed)
    if schedule["name"] == "one_shot":
        train_segment(
            problem, model, lineage, steps, lr, seed, on_step=on_step, should_stop=should_stop
        )
    if has_kernel_steps(spec.pruning.sequence):  # kernel steps may have cut dead columns
        plan = widths_of(model, problem.graph)
    lineage = lineage.extended(
        trial=trial, stage="final", steps=steps, epochs=steps / per_epoch, lr=lr, rung=lineage.rung
    )
    val_accuracy = evaluate(model, problem.data.val).top1
    test_accuracy = evaluate(model, problem.data.test).top1
    model = model.cpu()  # delivered, counted and exported from the CPU
    measured = Measured(
        cost=measure_candidate_cost(model, problem.input_shape, spec.pruning.sequence),
        latency=problem.measure_latency(model),
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
    )
    return FinalModel(
        model=model,
        plan=plan,
        trial=trial,
        measured=measured,
        search_val_accuracy=search_val_accuracy,
        seconds=time.perf_counter() - started,
        lineage=lineage,
        continued=fidelity is not None and checkpoint is not None,
        schedule=schedule,
    )
