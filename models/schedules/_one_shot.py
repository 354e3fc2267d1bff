"""``one_shot``: prune to the plan, then fine-tune (the schedule when none is asked for)."""

from __future__ import annotations

from models.schedules._base import FixedMoves, Move, MoveSource

__all__ = ["OneShot"]


class OneShot:
    """Cut every group to the plan at the start, then train all the steps."""

    name = "one_shot"
    watches_accuracy = False
    restarts_lr = False

    def moves(self, total_steps: int, criterion: str) -> MoveSource:
        """Return one move: the whole cut, then ``total_steps`` of training."""
        return FixedMoves([Move(1.0, criterion, total_steps)])
