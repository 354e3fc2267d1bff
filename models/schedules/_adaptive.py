"""``adaptive``: the error-tolerance controller of adaptive filter pruning.

The user says how much validation accuracy the model may lose (``max_accuracy_drop``).
The fine-tune is cut into ``steps`` segments, each a fine-tune of its own (so the
accuracy after it is that of a settled model); before each, the controller looks at the
validation accuracy the last segment left and sets the pruning rate: while accuracy is
within the tolerance of the unpruned model's, it cuts the current rate's share of the
plan and raises the rate (by :data:`GROW`); when it is not, it backs off: it cuts no
more than a deadline requires, lets the segment recover, and lowers the rate (by
:data:`SHRINK`). The deadline is a floor on progress that reaches the plan with
:func:`reserve` segments left, so the schedule ends at the plan's widths like every
other with some training at them (a controller that only ever waited would have to
make the whole cut at the end, with nothing left to recover); its record says when the
floor, not the accuracy, set a cut. The segments are spaced as iterative's rounds
(:func:`~models.schedules._base.rounds`): all but the last split the first
:data:`~models.schedules.PRUNING_SHARE` of the fine-tune, the last (always at the plan)
trains the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.errors import ModelsError
from models.schedules._base import Feedback, Move, rounds

__all__ = ["GROW", "SHRINK", "Adaptive", "AdaptiveController", "Decision", "reserve"]

GROW = 1.5
"""The rate is multiplied by this after a cut made within the tolerance."""

SHRINK = 0.5
"""The rate is multiplied by this when accuracy is outside the tolerance."""


def reserve(steps: int) -> int:
    """Return the segments of ``steps`` kept for training at the plan's widths: a
    quarter, at least one."""
    return max(1, steps // 4)


@dataclass(frozen=True)
class Decision:
    """One choice of the controller, for reports and tests.

    Attributes:
        step: steps trained when it chose.
        val_accuracy: the accuracy it looked at.
        within: that accuracy was within the tolerance.
        rate: the share of the plan's cut it made now.
        progress: the progress it cut to.
        forced: the deadline's floor, not the accuracy, set this cut (it is more than
            the controller chose).
    """

    step: int
    val_accuracy: float
    within: bool
    rate: float
    progress: float
    forced: bool


class AdaptiveController:
    """The :class:`MoveSource` of one adaptive run; :attr:`decisions` records it."""

    def __init__(self, total_steps: int, steps: int, tolerance: float, criterion: str) -> None:
        self._ends = rounds(total_steps, steps)
        self._tolerance = tolerance
        self._criterion = criterion
        self._index = 0
        self._pace = steps - reserve(steps)  # segments the cut is spread over at least
        self._rate = 1.0 / self._pace
        self._progress = 0.0
        self.decisions: list[Decision] = []

    def next_move(self, feedback: Feedback) -> Move | None:
        """Return the next segment's cut from the accuracy the last one left.

        Raises:
            ModelsError: the feedback carries no accuracy (the runner must measure it).
        """
        segments = len(self._ends) - 1
        if self._index >= segments:
            return None
        if feedback.val_accuracy is None or feedback.reference_accuracy is None:
            raise ModelsError("internal error: the adaptive schedule needs validation accuracy")
        within = feedback.val_accuracy >= feedback.reference_accuracy - self._tolerance
        before = self._progress
        chosen = min(1.0, before + self._rate) if within else before
        self._rate *= GROW if within else SHRINK
        floor = min(1.0, (self._index + 1) / self._pace)
        self._progress = max(chosen, floor)
        self.decisions.append(
            Decision(
                step=feedback.step,
                val_accuracy=feedback.val_accuracy,
                within=within,
                rate=self._progress - before,
                progress=self._progress,
                forced=self._progress > chosen,
            )
        )
        length = self._ends[self._index + 1] - self._ends[self._index]
        self._index += 1
        return Move(self._progress, self._criterion, length)

    def explain(self) -> tuple[dict[str, Any], ...]:
        """Return :attr:`decisions` as JSON records."""
        return tuple(asdict(d) for d in self.decisions)


class Adaptive:
    """Adaptive filter pruning within ``max_accuracy_drop`` over ``steps`` segments.

    Args:
        max_accuracy_drop: the tolerance, a fraction of accuracy (0.01 is one point).
        steps: segments, each one chance for the controller to cut.

    Raises:
        ModelsError: no tolerance, one outside [0, 1), or fewer than two steps.
    """

    name = "adaptive"
    watches_accuracy = True
    restarts_lr = True  # each segment ends settled, so the accuracy it reads is fair
    default_steps = 10

    def __init__(self, max_accuracy_drop: float | None, steps: int = default_steps) -> None:
        if max_accuracy_drop is None:
            raise ModelsError(
                "the adaptive schedule keeps validation accuracy within "
                "budget.max_accuracy_drop of the unpruned model's: set it (e.g. 0.01)",
                fields=("budget.max_accuracy_drop",),
            )
        if not 0.0 <= max_accuracy_drop < 1.0:
            raise ModelsError(
                f"budget.max_accuracy_drop must be in [0, 1), got {max_accuracy_drop}",
                fields=("budget.max_accuracy_drop",),
            )
        if steps < 2:
            raise ModelsError(
                f"pruning.schedule_steps: adaptive needs at least 2 steps, got {steps}",
                fields=("pruning.schedule_steps",),
            )
        self.max_accuracy_drop = max_accuracy_drop
        self.steps = steps

    def moves(self, total_steps: int, criterion: str) -> AdaptiveController:
        """Return a fresh controller for a fine-tune of ``total_steps`` steps."""
        return AdaptiveController(total_steps, self.steps, self.max_accuracy_drop, criterion)
