"""The final fine-tune along a pruning schedule (``pruning.schedule`` other than one_shot).

The search's trials always prune at once; the delivered model may instead be pruned
gradually while it is fine-tuned (:mod:`models.schedules`), ending at the chosen plan's
widths exactly, so the checkpoint, exports and report that follow are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from models.prune import Plan
from models.schedules import (
    ScheduleConfig,
    ScheduleContext,
    ScheduledModel,
    make_schedule,
    train_with_schedule,
)
from models.train import OptimizerCarry, TrainProgress, steps_per_epoch
from search.checkpoints import Lineage
from search.problem import PruningProblem
from search.rungs import train_segment
from search.spec import JobSpec

__all__ = ["schedule_config", "train_scheduled"]


def schedule_config(spec: JobSpec) -> ScheduleConfig:
    """Return the schedule ``spec.pruning`` names, with its settings."""
    return ScheduleConfig(
        name=spec.pruning.schedule,
        steps=spec.pruning.schedule_steps,
        criteria=tuple(spec.pruning.criteria),
        max_accuracy_drop=spec.budget.max_accuracy_drop,
    )


def train_scheduled(
    problem: PruningProblem,
    plan: Plan,
    lineage: Lineage,
    total_steps: int,
    lr: float,
    seed: int,
    *,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScheduledModel:
    """Prune the unpruned model to ``plan`` along the spec's schedule while fine-tuning it
    ``total_steps`` steps (the learning rate decaying from ``lr`` over all of them, or
    over each round of a schedule that restarts it).

    Args:
        problem: the job's fixed inputs (the unpruned model is not modified).
        plan: the chosen plan.
        lineage: the training so far (a fresh one: the delivered model starts here).
        total_steps: optimizer steps of the final fine-tune.
        lr: its initial learning rate.
        seed: seeds the data order, the recalibrations and the ``random`` criterion.
        on_step: progress over the whole fine-tune.
        should_stop: polled between steps.

    Returns:
        The :class:`~models.schedules.ScheduledModel`, on the problem's device.

    Raises:
        ModelsError: the schedule's settings cannot be used (the message names the
            spec field).
    """
    spec = problem.spec
    per_epoch = steps_per_epoch(len(problem.data.train), spec.finetune.batch_size)
    carry = OptimizerCarry()  # momentum goes on while a segment trains the same model

    def trainer(model: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        def progress(p: TrainProgress) -> None:
            assert on_step is not None
            done = start + p.step
            on_step(
                dataclasses.replace(p, step=done, total_steps=total_steps, epoch=done / per_epoch)
            )

        train_segment(
            problem,
            model,
            lineage,
            steps,
            lr,
            seed,
            on_step=progress if on_step is not None else None,
            should_stop=should_stop,
            offset=start,
            lr_window=window,
            carry=carry,
        )

    context = ScheduleContext(
        graph=problem.graph,
        train=problem.data.train,
        calibration=problem.calibration,
        val=problem.data.val,
        reference_accuracy=problem.baseline.val_accuracy,
        ignored_layers=tuple(spec.pruning.ignored_layers),
        seed=seed,
    )
    return train_with_schedule(
        problem.teacher,  # the unpruned model on the device; the schedule trains a copy
        plan,
        make_schedule(schedule_config(spec)),
        total_steps=total_steps,
        criterion=spec.pruning.criterion,
        context=context,
        trainer=trainer,
    )
