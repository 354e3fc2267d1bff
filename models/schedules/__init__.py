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
iterative       an equal share per round, fine-tuning between rounds;       3
                ``criteria`` may switch between rounds (taylor → fpgm)
dropnet         the same share of each group's remaining channels per       5
                round, lowest mean post-activation first
agp             Zhu & Gupta's cubic curve over the first half of the        10
                fine-tune, then fine-tune at the plan
one_cycle       the one-cycle curve from the first step to the end          10
while_training  equal cuts during training, the last after its last step    10
adaptive        an accuracy-driven rate within ``max_accuracy_drop``        10
==============  ==========================================================  ==========
"""

from __future__ import annotations

from models.names import SCHEDULE_NAMES
from models.schedules._adaptive import Adaptive, AdaptiveController, Decision
from models.schedules._base import (
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
