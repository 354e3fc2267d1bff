"""How pruning happens over a fine-tune: the pruning schedules.

A :class:`Schedule` decides when to cut and how far, as a series of :class:`Move` s
(a *progress* from full width, 0, to the plan's widths, 1, then some training);
:func:`train_with_schedule` carries the moves out: it cuts the model physically with
:func:`models.prune.apply_plan` at each move's widths (:func:`widths_at`), re-estimates
BatchNorm, and trains with the caller's :class:`SegmentTrainer`. Every schedule ends at
the plan's widths exactly, so what follows (checkpoint, export, report) is the same
whichever was used. :func:`make_schedule` turns a name into a schedule.

==============  ==========================================================  ==========
name            how the channels go                                         steps
==============  ==========================================================  ==========
one_shot        all at once, then fine-tune                                 (1)
iterative       an equal share per round, fine-tuning (lr restarted)        3
                after each; ``criteria`` may switch between rounds
                (taylor → fpgm)
dropnet         the same share of each group's remaining channels per       5
                round, lowest mean post-activation first
agp             Zhu & Gupta's cubic curve, then fine-tune at the plan       10
one_cycle       the one-cycle curve, then fine-tune at the plan             10
while_training  soft: the plan's worth zeroed at every interval, zeroed     10
                ones trained too; cut physically after the last step
adaptive        an accuracy-driven rate within ``max_accuracy_drop``        10
==============  ==========================================================  ==========

Every schedule but one_shot and while_training makes its cuts within the first
:data:`PRUNING_SHARE` (half) of the fine-tune and trains the rest at the plan's widths:
on one decay of the learning rate (agp, one_cycle), or as the last, longest round of a
schedule that restarts it (iterative, dropnet, adaptive). while_training keeps the
model's shape and zeroes channels instead (:attr:`Move.soft`) until its final cut.
Each segment's optimizer is built afresh by the trainer for the model as it is then,
so no optimizer state crosses a cut (momentum restarts with every segment).
"""

from __future__ import annotations

from models.names import SCHEDULE_NAMES
from models.schedules._adaptive import Adaptive, AdaptiveController, Decision
from models.schedules._base import (
    PRUNING_SHARE,
    Feedback,
    FixedMoves,
    Move,
    MoveSource,
    Schedule,
    ScheduleConfig,
    Spacing,
)
from models.schedules._gradual import AGP_PRUNING_SHARE, agp_progress, one_cycle_progress
from models.schedules._registry import SCHEDULES, make_schedule
from models.schedules._runner import (
    ScheduleContext,
    ScheduledModel,
    SegmentTrainer,
    train_with_schedule,
)
from models.schedules._widths import widths_at

__all__ = [
    "AGP_PRUNING_SHARE",
    "PRUNING_SHARE",
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "Adaptive",
    "AdaptiveController",
    "Decision",
    "Feedback",
    "FixedMoves",
    "Move",
    "MoveSource",
    "Schedule",
    "ScheduleConfig",
    "ScheduleContext",
    "ScheduledModel",
    "SegmentTrainer",
    "Spacing",
    "agp_progress",
    "make_schedule",
    "one_cycle_progress",
    "train_with_schedule",
    "widths_at",
]
