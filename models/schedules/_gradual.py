"""Gradual schedules: many small cuts spread over the fine-tune along a curve.

``agp``, automated gradual pruning (Zhu & Gupta, 2017): the share of the plan's channels
removed follows the cubic ``s_t = s_f + (s_i - s_f)(1 - t/T)^3`` with ``s_i = 0`` over
the first :data:`AGP_PRUNING_SHARE` of the fine-tune (fast at first, while there is
redundancy, then slower); the rest trains at the plan's widths.

``one_cycle``, one-cycle pruning (Hubens et al., 2022): cuts from the first step of
training to its end along the one-cycle curve ``(1 + e^(β-α)) / (1 + e^(β-α·t))``
(α = 14, β = 6; slow, then fast, then settling), the last cut leaving one segment of
training at the plan's widths.

``while_training``: channels go during training itself, an equal share at every
segment boundary, the last cut at the very end: there is no separate retraining phase
at the final widths (BatchNorm statistics are re-estimated after every cut).
"""

from __future__ import annotations

import math

from models.errors import ModelsError
from models.schedules._base import FixedMoves, Move, MoveSource, boundaries

__all__ = ["AGP_PRUNING_SHARE", "Agp", "OneCycle", "WhileTraining", "agp_progress"]

AGP_PRUNING_SHARE = 0.5
"""Share of the fine-tune over which AGP prunes (the rest recovers at the plan)."""

ONE_CYCLE_ALPHA = 14.0
ONE_CYCLE_BETA = 6.0


def agp_progress(t: float) -> float:
    """Return the share of the plan's cut AGP has made at fraction ``t`` of its pruning
    span: ``1 - (1 - t)^3`` (Zhu & Gupta's sparsity with ``s_i = 0``, over ``s_f``)."""
    return 1.0 - (1.0 - t) ** 3


def one_cycle_progress(t: float) -> float:
    """Return the share of the plan's cut made at fraction ``t`` of training along the
    one-cycle curve, rescaled so that it is 0 at ``t = 0`` and 1 at ``t = 1``."""

    def curve(x: float) -> float:
        return (1 + math.exp(ONE_CYCLE_BETA - ONE_CYCLE_ALPHA)) / (
            1 + math.exp(ONE_CYCLE_BETA - ONE_CYCLE_ALPHA * x)
        )

    low = curve(0.0)
    return min(1.0, max(0.0, (curve(t) - low) / (1.0 - low)))


def _at_least(name: str, steps: int, least: int) -> None:
    if steps < least:
        raise ModelsError(
            f"pruning.schedule_steps: {name} needs at least {least} steps, got {steps}",
            fields=("pruning.schedule_steps",),
        )


class Agp:
    """Automated gradual pruning in ``steps`` cuts over the first half of the fine-tune.

    Raises:
        ModelsError: no step.
    """

    name = "agp"
    watches_accuracy = False
    restarts_lr = False
    default_steps = 10

    def __init__(self, steps: int = default_steps) -> None:
        _at_least(self.name, steps, 1)
        self.steps = steps

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return a first segment at full width, then cut ``k`` (1 to ``steps``) to
        :func:`agp_progress` ``(k / steps)`` at ``k / steps`` of the pruning span."""
        span = round(total_steps * AGP_PRUNING_SHARE)
        ends = [*boundaries(0, span, self.steps), total_steps]
        moves = [Move(0.0, criterion, ends[1] - ends[0])]
        for k in range(1, self.steps + 1):
            moves.append(Move(agp_progress(k / self.steps), criterion, ends[k + 1] - ends[k]))
        return FixedMoves(moves)


class OneCycle:
    """One-cycle pruning: ``steps`` cuts spread over the whole fine-tune.

    Raises:
        ModelsError: fewer than two steps (the curve needs a start and an end).
    """

    name = "one_cycle"
    watches_accuracy = False
    restarts_lr = False
    default_steps = 10

    def __init__(self, steps: int = default_steps) -> None:
        _at_least(self.name, steps, 2)
        self.steps = steps

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return cut ``k`` (0 to ``steps - 1``) at ``k / steps`` of the fine-tune, to
        :func:`one_cycle_progress` ``(k / (steps - 1))``."""
        ends = boundaries(0, total_steps, self.steps)
        last = self.steps - 1
        return FixedMoves(
            [
                Move(one_cycle_progress(k / last), criterion, ends[k + 1] - ends[k])
                for k in range(self.steps)
            ]
        )


class WhileTraining:
    """Prune during training: ``steps`` equal cuts, one after every ``1/steps`` of the
    fine-tune, the last after its final step.

    Raises:
        ModelsError: no step.
    """

    name = "while_training"
    watches_accuracy = False
    restarts_lr = False
    default_steps = 10

    def __init__(self, steps: int = default_steps) -> None:
        _at_least(self.name, steps, 1)
        self.steps = steps

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return a full-width first segment, then cut ``k`` to ``k / steps`` after
        segment ``k``; the last cut trains no more."""
        ends = [*boundaries(0, total_steps, self.steps), total_steps]
        return FixedMoves(
            [Move(k / self.steps, criterion, ends[k + 1] - ends[k]) for k in range(self.steps + 1)]
        )
