"""Running a schedule: cut, recalibrate, train, look, repeat, until the plan is reached."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from models.data import BatchSource
from models.errors import ModelsError, PlanError
from models.prune import Plan, PruningGraph, apply_plan, build_pruning_graph, output_channels
from models.schedules._base import Feedback, Move, Schedule
from models.schedules._soft import channel_scores, zero_channels
from models.schedules._widths import widths_at
from models.train import evaluate, recalibrate_batchnorm

__all__ = ["ScheduleContext", "ScheduledModel", "SegmentTrainer", "train_with_schedule"]

logger = logging.getLogger(__name__)


class SegmentTrainer(Protocol):
    """Trains one segment of a scheduled fine-tune in place.

    ``trainer(model, start, steps, lr_window)`` trains ``model`` for ``steps`` optimizer
    steps that are steps ``start`` to ``start + steps`` of the whole fine-tune (the data
    order continues across segments), the learning rate following ``lr_window`` as
    :func:`models.train.fine_tune` takes it: ``(start, total)``, one decay over the
    whole fine-tune, or ``(0, steps)``, a decay of this segment's own (for schedules
    that :attr:`~models.schedules.Schedule.restarts_lr`). The model may be a different,
    narrower object in every call.
    """

    def __call__(
        self, model: nn.Module, start: int, steps: int, lr_window: tuple[int, int], /
    ) -> None: ...


@dataclass(frozen=True)
class ScheduleContext:
    """What a scheduled fine-tune needs besides the model, the plan and the trainer.

    Attributes:
        graph: the unpruned model's groups, which the plan refers to.
        train: the training split (BatchNorm statistics are re-estimated on it after
            every cut).
        calibration: batches data-driven criteria rank channels on.
        val: the validation split, needed by schedules that watch accuracy.
        reference_accuracy: the unpruned model's validation top-1 if known (else
            measured when a schedule watches accuracy).
        ignored_layers: module paths never pruned, as the graph was built with.
        seed: seeds the recalibration and the ``random`` criterion.
        recalibration_batches: batches BatchNorm statistics are re-estimated from after
            each cut.
    """

    graph: PruningGraph
    train: BatchSource
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    val: BatchSource | None = None
    reference_accuracy: float | None = None
    ignored_layers: tuple[str, ...] = ()
    seed: int = 0
    recalibration_batches: int = 20


@dataclass(frozen=True)
class ScheduledModel:
    """The model a schedule ended with, and what happened on the way.

    Attributes:
        model: the pruned, trained model, with exactly the plan's widths.
        schedule: the schedule's name.
        history: one record per move: ``step`` (steps trained before its cut),
            ``progress``, ``criterion``, ``channels`` (kept in all groups together,
            zeroed ones not counted), ``cut`` (whether channels went), ``soft`` (they
            were only zeroed), ``train_steps`` and, for schedules that watch accuracy,
            ``val_accuracy`` after its training.
        decisions: what an accuracy-driven controller chose, one record each (empty
            for the fixed schedules).
    """

    model: nn.Module
    schedule: str
    history: tuple[dict[str, Any], ...]
    decisions: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the record as report JSON (without the model)."""
        data: dict[str, Any] = {"name": self.schedule, "moves": list(self.history)}
        if self.decisions:
            data["decisions"] = list(self.decisions)
        return data


def train_with_schedule(
    model: nn.Module,
    plan: Plan,
    schedule: Schedule,
    *,
    total_steps: int,
    criterion: str,
    context: ScheduleContext,
    trainer: SegmentTrainer,
) -> ScheduledModel:
    """Prune ``model`` to ``plan`` along ``schedule`` while fine-tuning it ``total_steps``.

    Each move cuts the model physically to the widths of its progress
    (:func:`~models.schedules.widths_at`; the criterion ranks the channels of the
    model as trained so far), or for a soft move zeroes the channels such a cut would
    remove, re-estimates BatchNorm statistics, trains the move's
    steps with ``trainer`` and, for a schedule that watches accuracy, measures the
    validation accuracy it feeds back. The run ends at the plan's widths exactly,
    checked layer by layer.

    Args:
        model: the unpruned model; not modified (a copy is cut and trained, on the
            device ``model`` is on; cuts happen on the CPU).
        plan: the final widths, against ``context.graph``.
        schedule: when and how far to cut.
        total_steps: optimizer steps of the whole fine-tune.
        criterion: the job's criterion (schedules may fix their own).
        context: the graph, data and seed.
        trainer: trains each segment.

    Returns:
        The :class:`ScheduledModel`, in eval mode on ``model``'s device.

    Raises:
        ModelsError: a data criterion without calibration batches, a schedule that
            watches accuracy without a validation split, or a schedule that broke its
            contract (the message says how).
        PlanError: the plan does not fit the graph, or removes residual blocks (a
            schedule moves widths gradually; a block goes at once, by a one-shot plan).
    """
    graph = context.graph
    if graph.removed_blocks(plan):
        raise PlanError(
            f"the {schedule.name} schedule narrows channels gradually and cannot remove "
            f"blocks ({', '.join(graph.removed_blocks(plan))}); prune them one-shot"
        )
    device = _device_of(model)
    current = copy.deepcopy(model).to(device)
    reference = None
    if schedule.watches_accuracy:
        if context.val is None:
            raise ModelsError(
                f"the {schedule.name} schedule watches validation accuracy: give it a data "
                "set with a validation split",
                fields=("dataset",),
            )
        reference = context.reference_accuracy
        if reference is None:
            reference = evaluate(current, context.val).top1
    source = schedule.moves(total_steps, criterion)
    widths = Plan({g.name: g.channels for g in graph.groups})
    step, progress = 0, 0.0
    feedback = Feedback(0, 0.0, reference, reference)
    history: list[dict[str, Any]] = []
    while (move := source.next_move(feedback)) is not None:
        _check_move(schedule.name, move, progress, step, total_steps)
        target = widths_at(graph, plan, move.progress, move.spacing)
        narrower = Plan({name: min(widths[name], w) for name, w in target.items()})
        cut = narrower != widths
        if cut and move.soft:
            _zero(current, narrower, move.criterion, context, device)
        elif cut:
            current = _cut(current, narrower, move.criterion, context, device)
            widths = narrower
        progress = move.progress
        if move.train_steps:
            window = (0, move.train_steps) if schedule.restarts_lr else (step, total_steps)
            trainer(current, step, move.train_steps, window)
        accuracy = None
        if schedule.watches_accuracy:
            assert context.val is not None
            accuracy = evaluate(current, context.val).top1
        record: dict[str, Any] = {
            "step": step,
            "progress": round(progress, 6),
            "criterion": move.criterion,
            "channels": sum(narrower.values()),
            "cut": cut,
            "soft": move.soft,
            "train_steps": move.train_steps,
        }
        if accuracy is not None:
            record["val_accuracy"] = accuracy
        history.append(record)
        logger.debug("schedule %s: %s", schedule.name, record)
        step += move.train_steps
        feedback = Feedback(step, progress, accuracy, reference)
    if progress != 1.0 or step != total_steps:
        raise ModelsError(
            f"internal error: schedule {schedule.name} ended at progress {progress} after "
            f"{step} of {total_steps} steps; it must end at the plan after all the steps"
        )
    _check_final(current, graph, plan)
    return ScheduledModel(current.eval(), schedule.name, tuple(history), source.explain())


def _device_of(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _check_move(name: str, move: Move, progress: float, step: int, total: int) -> None:
    if move.progress < progress:
        raise ModelsError(
            f"internal error: schedule {name} went back from progress {progress} to "
            f"{move.progress}; channels that went cannot come back"
        )
    if step + move.train_steps > total:
        raise ModelsError(f"internal error: schedule {name} asked for more than the {total} steps")


def _changing(
    model: nn.Module, widths: Plan, context: ScheduleContext
) -> tuple[PruningGraph, dict[str, int]]:
    """Return ``model``'s own graph (as it is now) and the groups that ``widths`` (by
    the names of the unpruned groups) narrows."""
    graph = build_pruning_graph(
        model,
        context.graph.input_shape,
        round_to=context.graph.round_to,
        ignored_layers=context.ignored_layers,
    )
    present = {g.name: g.channels for g in graph.groups}
    # a group already at its final width may be merged into another by the tracer (a
    # grouped convolution cut to one channel per group looks depthwise): leave it out
    changing = {name: w for name, w in widths.items() if present.get(name, w) != w}
    missing = [name for name in changing if name not in present]
    if missing:
        raise ModelsError(f"groups {missing} are no longer separate in the pruned model")
    return graph, changing


def _zero(
    model: nn.Module,
    widths: Plan,
    criterion: str,
    context: ScheduleContext,
    device: torch.device,
) -> None:
    """Zero in place the channels of ``model`` a cut to ``widths`` would remove, then
    re-estimate its BatchNorm statistics (``model`` ends on ``device``)."""
    model.cpu()
    graph, changing = _changing(model, widths, context)
    scores = channel_scores(model, graph, criterion, context)
    zero_channels(model, changing, scores, graph, context)
    model.to(device)
    recalibrate_batchnorm(
        model, context.train, batches=context.recalibration_batches, seed=context.seed
    )


def _cut(
    model: nn.Module,
    widths: Plan,
    criterion: str,
    context: ScheduleContext,
    device: torch.device,
) -> nn.Module:
    """Return ``model`` cut to ``widths`` (by the names of the unpruned groups), on
    ``device`` with its BatchNorm statistics re-estimated."""
    model = model.cpu()
    graph, changing = _changing(model, widths, context)
    pruned = apply_plan(
        model,
        changing,
        criterion,
        list(context.calibration),
        input_shape=context.graph.input_shape,
        graph=graph,
        seed=context.seed,
        ignored_layers=context.ignored_layers,
    ).to(device)
    recalibrate_batchnorm(
        pruned, context.train, batches=context.recalibration_batches, seed=context.seed
    )
    return pruned


def _check_final(model: nn.Module, graph: PruningGraph, plan: Plan) -> None:
    modules = dict(model.named_modules())
    for group in graph.groups:
        got = output_channels(modules[group.name])
        if got != plan.width(group):
            raise ModelsError(
                f"internal error: group {group.name!r} ended with {got} channels, the plan "
                f"keeps {plan.width(group)}"
            )
