"""Gradual schedules: pruning spread over one decay of the learning rate.

``agp`` and ``one_cycle`` cut at ``steps`` evenly spaced points of the first
:data:`PRUNING_SHARE` of the fine-tune (after a first segment at full width) and train
the rest of it, on the same cosine decay, at the plan's widths; only the curve of the
cut differs. ``while_training`` zeroes channels all along instead and cuts at the end.

``agp``, automated gradual pruning (Zhu & Gupta, 2017): the share of the plan's channels
removed follows the cubic ``s_t = s_f + (s_i - s_f)(1 - t/T)^3`` with ``s_i = 0`` (fast
at first, while there is redundancy, then slower).

``one_cycle``, one-cycle pruning (Hubens et al., 2022): the one-cycle curve
``(1 + e^(β-α)) / (1 + e^(β-α·t))`` (α = 14, β = 6; slow, then fast, then settling),
cut ``k`` of ``steps`` at ``t = k / steps``. The paper lays the curve over the whole
training; here it is laid over the pruning share. Laid over the whole fine-tune (as
before), the steep middle of the curve put two thirds of the cut into the cuts at 30-50 %
of a 6-epoch fine-tune, each taking the model to about 20 % accuracy on ``digits``, with
the learning rate at a third of its peak for the ~40 % of the steps left: the model
never recovered (69 % where one_shot reaches 95 %). The curve's settling tail (its last
percent of the cut over the last quarter of training) cannot be cut physically anyway:
channels go in multiples of ``round_to``.

``while_training``, soft filter pruning (He et al., 2018): filters are pruned during
training itself, with no retraining phase. The fine-tune is cut into ``steps`` equal
intervals; at the start of each, the plan's worth of channels ranked lowest *now* is set
to zero (filters, BatchNorm scale and shift, consumers' inputs), the model keeping its
shape, and the interval trains every weight, zeroed ones included, so a channel zeroed
too early can grow back and win its place; after the last step the model is cut
physically to the plan, by the same ranking. As the learning rate decays to zero along
the one cosine, the channels zeroed last barely grow back, so the final cut removes
almost nothing the model still used (on ``digits``, seed 0, validation accuracy went
from 94.1 % before it to 94.8 % after, BatchNorm re-estimated). As first built, this
schedule cut physically, an equal share at each interval, the last cut after the final
step: its last cuts met a learning rate near zero and the model ended at chance (15 % on
``digits`` at 6 epochs); cutting physically within the first half instead reached
78-88 %, zeroing softly 91-92 %. Zeroing a rising share (asymptotic soft pruning) did
worse at this budget: the late, larger zeroings met the same low learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from models.errors import ModelsError
from models.schedules._base import PRUNING_SHARE, FixedMoves, Move, MoveSource, boundaries

__all__ = [
    "AGP_PRUNING_SHARE",
    "Agp",
    "OneCycle",
    "WhileTraining",
    "agp_progress",
    "one_cycle_progress",
]

AGP_PRUNING_SHARE = PRUNING_SHARE
"""Share of the fine-tune over which AGP prunes (the rest recovers at the plan); the same
:data:`~models.schedules.PRUNING_SHARE` as every multi-step schedule."""

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


def _curve_moves(
    total_steps: int, steps: int, curve: Callable[[float], float], criterion: str
) -> MoveSource:
    """Return a first segment at full width, then cut ``k`` (1 to ``steps``) to
    ``curve(k / steps)`` at ``k / steps`` of the first :data:`PRUNING_SHARE` of the
    fine-tune; the last cut reaches the plan and the rest trains at its widths."""
    span = round(total_steps * PRUNING_SHARE)
    ends = [*boundaries(0, span, steps), total_steps]
    moves = [Move(0.0, criterion, ends[1] - ends[0])]
    for k in range(1, steps + 1):
        progress = 1.0 if k == steps else curve(k / steps)
        moves.append(Move(progress, criterion, ends[k + 1] - ends[k]))
    return FixedMoves(moves)


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
        """Return the :func:`_curve_moves` of :func:`agp_progress`."""
        return _curve_moves(total_steps, self.steps, agp_progress, criterion)


class OneCycle:
    """One-cycle pruning: ``steps`` cuts along the one-cycle curve.

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
        """Return the :func:`_curve_moves` of :func:`one_cycle_progress`."""
        return _curve_moves(total_steps, self.steps, one_cycle_progress, criterion)


class WhileTraining:
    """Soft filter pruning: zero the plan's worth of channels at the start of each of
    ``steps`` equal intervals, train them all, cut physically after the last step.

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
        """Return ``steps`` soft moves to the plan (progress 1), one per interval, and
        the physical cut after the last step (no training follows it)."""
        ends = boundaries(0, total_steps, self.steps)
        moves = [Move(1.0, criterion, ends[k + 1] - ends[k], soft=True) for k in range(self.steps)]
        return FixedMoves([*moves, Move(1.0, criterion, 0)])
