"""The contract of a pruning schedule: moves, the feedback they get, and their settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from models.errors import ModelsError

__all__ = [
    "Feedback",
    "FixedMoves",
    "Move",
    "MoveSource",
    "Schedule",
    "ScheduleConfig",
    "PRUNING_SHARE",
    "Spacing",
    "boundaries",
    "rounds",
]

PRUNING_SHARE = 0.5
"""Share of a fine-tune within which the multi-step schedules that cut physically as
they go (all but one_shot and the soft while_training) make their cuts; the rest
trains the plan's widths. Cuts land while the single cosine decay of the gradual
schedules is still above half its peak, and the last round of a schedule that restarts
the decay fine-tunes at least half of the steps. Without it (cuts spread to the end of
the fine-tune) the last, largest cuts of a short fine-tune met a learning rate near zero
or a round of a few dozen steps: on ``digits`` at 6 epochs a cut to the next widths
takes a 6.5 %-MACs ResNet-20 from about 95 % to about 20 % validation accuracy, and
while_training ended at chance, one_cycle at 69 %, iterative at 82 %
(``benchmarks/results/seed_methods_schedules.md``, before this share)."""

Spacing = Literal["linear", "geometric"]
"""How a move's progress becomes widths: ``linear``, every group has lost that fraction of
the channels the plan removes; ``geometric``, every group has shrunk by that fraction of
the plan's factor in log space (a constant share of what is left goes at each step)."""


@dataclass(frozen=True)
class Move:
    """One cut of a schedule, and the training that follows it.

    Attributes:
        progress: how far from the full widths to the plan's the model is cut now, in
            [0, 1]: 0 keeps every channel, 1 is exactly the plan. Never below the
            previous move's (channels that went do not come back).
        criterion: the :mod:`models.criteria` name that ranks channels in this cut.
        train_steps: optimizer steps trained after the cut, before the next move.
        spacing: how ``progress`` maps to widths (:data:`Spacing`).
        soft: the channels a cut to ``progress`` removes are only set to zero
            (filters, BatchNorm, consumers' inputs; :mod:`models.schedules._soft`) and
            go on training, the model keeping its shape; the next move ranks all the
            channels again. The last move of a schedule is never soft: it cuts.
    """

    progress: float
    criterion: str
    train_steps: int
    spacing: Spacing = "linear"
    soft: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.progress) and 0.0 <= self.progress <= 1.0):
            raise ValueError(f"progress must be in [0, 1], got {self.progress}")
        if self.train_steps < 0:
            raise ValueError(f"train_steps must be zero or positive, got {self.train_steps}")


@dataclass(frozen=True)
class Feedback:
    """What a schedule sees before it chooses its next move.

    Attributes:
        step: optimizer steps trained so far.
        progress: the progress of the cut the model has now.
        val_accuracy: validation top-1 of the model as it is now; None unless the
            schedule :attr:`Schedule.watches_accuracy`.
        reference_accuracy: validation top-1 of the unpruned model (same condition).
    """

    step: int
    progress: float
    val_accuracy: float | None = None
    reference_accuracy: float | None = None


class MoveSource(Protocol):
    """The moves of one scheduled fine-tune, given one at a time.

    Contract: the runner calls :meth:`next_move` first with the untrained, unpruned
    model's feedback, then once after every move's training, until it returns None. The
    moves' ``train_steps`` add up to the fine-tune's steps and the last move's progress
    is 1. A source serves one run and is not thread-safe.
    """

    def next_move(self, feedback: Feedback) -> Move | None:
        """Return the next cut and its training, or None when the schedule is done."""
        ...

    def explain(self) -> tuple[dict[str, Any], ...]:
        """Return what the source decided from its feedback, one JSON record per
        decision (empty for a schedule fixed in advance)."""
        ...


class Schedule(Protocol):
    """How pruning happens over a fine-tune (one of :data:`models.schedules.SCHEDULES`).

    A schedule only decides *when* to cut and *how far*; which channels go is the
    criterion's business and the surgery is :func:`models.prune.apply_plan`'s. Whatever
    the path, it ends at the plan's widths exactly. A schedule object holds settings
    only, so it may serve several runs; each run gets its own :class:`MoveSource`.

    Attributes:
        name: the name in :data:`models.names.SCHEDULE_NAMES`.
        watches_accuracy: the runner measures validation accuracy after every move's
            training and passes it in :class:`Feedback` (an accuracy-driven controller).
        restarts_lr: every move's training is a fine-tune of its own, the learning rate
            decaying from its initial value to zero within it (prune, fine-tune,
            repeat); otherwise one decay runs over the whole fine-tune and the cuts
            happen along it (gradual pruning during training).
    """

    name: str
    watches_accuracy: bool
    restarts_lr: bool

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return the moves of a fine-tune of ``total_steps`` steps.

        Args:
            total_steps: optimizer steps of the whole fine-tune (zero or more).
            criterion: the job's criterion, for schedules that do not fix their own.
        """
        ...


@dataclass(frozen=True)
class ScheduleConfig:
    """A schedule as a job spec or the CLI names it.

    Attributes:
        name: a name from :data:`models.names.SCHEDULE_NAMES`.
        steps: pruning steps (``pruning.schedule_steps``); None: the schedule's default.
        criteria: the iterative schedule's criteria, one phase each, in order
            (``pruning.criteria``); empty: the job's criterion throughout.
        max_accuracy_drop: the adaptive controller's tolerance, a fraction
            (``budget.max_accuracy_drop``).
    """

    name: str = "one_shot"
    steps: int | None = None
    criteria: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None


class FixedMoves:
    """A :class:`MoveSource` whose moves are fixed in advance (no feedback needed)."""

    def __init__(self, moves: Sequence[Move]) -> None:
        if not moves or moves[-1].progress != 1.0:
            raise ModelsError("internal error: a schedule must end at the plan (progress 1)")
        self._moves = list(moves)

    def next_move(self, feedback: Feedback) -> Move | None:
        """Return the next planned move, ignoring ``feedback``."""
        return self._moves.pop(0) if self._moves else None

    def explain(self) -> tuple[dict[str, Any], ...]:
        """Return no record: nothing was decided from feedback."""
        return ()


def boundaries(start: int, end: int, parts: int) -> list[int]:
    """Return ``parts + 1`` step counts from ``start`` to ``end`` splitting it evenly
    (rounded to whole steps; consecutive ones may be equal when the span is short)."""
    return [start + round(k * (end - start) / parts) for k in range(parts + 1)]


def rounds(total: int, parts: int, share: float = PRUNING_SHARE) -> list[int]:
    """Return ``parts + 1`` step counts that cut ``total`` steps into ``parts`` rounds:
    the first ``parts - 1`` take ``share / parts`` of the steps each, the last one all
    the rest (at least ``1 - share`` of them), so the cuts at the rounds' starts all lie
    within the first ``share`` of the fine-tune."""
    ends = boundaries(0, round(total * share), parts)
    ends[-1] = total
    return ends
