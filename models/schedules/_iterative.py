"""Iterative pruning: cut part of the way, fine-tune, repeat (and DropNet, one variant).

``iterative`` removes an equal share of the plan's channels at each of its steps and
fine-tunes after each, the learning rate restarting at every round (prune, fine-tune,
repeat). The rounds before the last split the first :data:`PRUNING_SHARE` of the
fine-tune evenly; the last, at the plan's widths, fine-tunes all the rest (at least
half), as iterative pruning ends with a final fine-tune of the pruned network. Equal
rounds, as first built, left the final widths a quarter of a short fine-tune (28 steps
on ``digits`` at 6 epochs, 82 % where one_shot reaches 95 %); one decay across all rounds
instead is worse still (the last rounds then fine-tune at a learning rate near zero).
Every round's optimizer is new (built by the trainer for the cut model's parameters),
so no momentum crosses a cut. Its criterion may change between
steps: with ``criteria`` such as ``("taylor", "fpgm")`` the first half of the steps
ranks channels by saliency and the second by similarity to the others, as the
structured-pruning paper's saliency-then-similarity iterations do.

``dropnet`` (Tan & Motani, 2020) removes, at each step, the same share of the channels
left in every group (so a group's width shrinks geometrically), choosing the channels
with the lowest average post-activation value. Its rounds are spaced as iterative's.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.errors import ModelsError
from models.schedules._base import FixedMoves, Move, MoveSource, rounds

__all__ = ["DropNet", "Iterative"]

DROPNET_CRITERION = "activation_mean"
"""Mean activation a channel's consumers receive, i.e. after BN and the non-linearity."""


def _check_steps(name: str, steps: int) -> None:
    if steps < 1:
        raise ModelsError(
            f"pruning.schedule_steps: {name} needs at least one step, got {steps}",
            fields=("pruning.schedule_steps",),
        )


class Iterative:
    """Prune ``1/steps`` of the way and fine-tune, ``steps`` times (the last round longest).

    Args:
        steps: number of cut-and-train rounds.
        criteria: one criterion per phase, the rounds split evenly between them in
            order; empty: the job's criterion in every round.

    Raises:
        ModelsError: fewer steps than criteria, or no step.
    """

    name = "iterative"
    watches_accuracy = False
    restarts_lr = True
    default_steps = 3

    def __init__(self, steps: int = default_steps, criteria: Sequence[str] = ()) -> None:
        _check_steps(self.name, steps)
        if len(criteria) > steps:
            raise ModelsError(
                f"pruning.schedule_steps: {len(criteria)} criteria need at least "
                f"{len(criteria)} steps, got {steps}",
                fields=("pruning.schedule_steps",),
            )
        self.steps = steps
        self.criteria = tuple(criteria)

    def criterion_of(self, round_index: int, default: str) -> str:
        """Return the criterion of round ``round_index`` (0-based)."""
        if not self.criteria:
            return default
        return self.criteria[round_index * len(self.criteria) // self.steps]

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return ``steps`` moves at progress 1/steps, 2/steps, …, 1, trained for
        :func:`~models.schedules._base.rounds` of the fine-tune."""
        ends = rounds(total_steps, self.steps)
        return FixedMoves(
            [
                Move((k + 1) / self.steps, self.criterion_of(k, criterion), ends[k + 1] - ends[k])
                for k in range(self.steps)
            ]
        )


class DropNet:
    """Remove the same share of every group's remaining channels at each of ``steps``
    rounds, lowest mean post-activation first, training between rounds.

    Raises:
        ModelsError: no step.
    """

    name = "dropnet"
    watches_accuracy = False
    restarts_lr = True
    default_steps = 5

    def __init__(self, steps: int = default_steps) -> None:
        _check_steps(self.name, steps)
        self.steps = steps

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return ``steps`` geometric moves ranked by :data:`DROPNET_CRITERION` (the
        job's ``criterion`` is not used: the post-activation value is DropNet's own),
        trained for :func:`~models.schedules._base.rounds` of the fine-tune."""
        ends = rounds(total_steps, self.steps)
        return FixedMoves(
            [
                Move(
                    (k + 1) / self.steps,
                    DROPNET_CRITERION,
                    ends[k + 1] - ends[k],
                    spacing="geometric",
                )
                for k in range(self.steps)
            ]
        )
