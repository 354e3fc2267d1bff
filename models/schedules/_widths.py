"""The widths a schedule's progress stands for, between full width and the plan's."""

from __future__ import annotations

from models.prune import ChannelGroup, Plan, PruningGraph
from models.schedules._base import Spacing

__all__ = ["widths_at"]


def widths_at(
    graph: PruningGraph, plan: Plan, progress: float, spacing: Spacing = "linear"
) -> Plan:
    """Return the plan ``progress`` of the way from full width to ``plan``.

    Each group's ideal width is ``C - progress · (C - P)`` (linear) or
    ``C · (P / C) ** progress`` (geometric), for ``C`` channels and ``P`` kept by the
    plan; it is snapped to the nearest width the group allows between ``P`` and ``C``
    (the wider one on a tie), so widths never grow as progress does. Progress 1 gives
    the plan's widths exactly and progress 0 full width.

    Args:
        graph: the unpruned model's groups (the plan's reference).
        plan: the final widths, checked against ``graph``.
        progress: in [0, 1].
        spacing: ``linear`` or ``geometric``.

    Returns:
        A plan naming every group of ``graph``.

    Raises:
        ValueError: ``progress`` is outside [0, 1] or ``spacing`` is unknown.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    if spacing not in ("linear", "geometric"):
        raise ValueError(f"unknown spacing {spacing!r}")
    return Plan({g.name: _width(g, plan.width(g), progress, spacing) for g in graph.groups})


def _width(group: ChannelGroup, target: int, progress: float, spacing: Spacing) -> int:
    full = group.channels
    if progress >= 1.0 or target >= full:
        return target
    if spacing == "linear":
        ideal = full - progress * (full - target)
    else:
        ideal = full * (target / full) ** progress
    allowed = [w for w in group.allowed_widths() if target <= w <= full]
    return min(allowed, key=lambda w: (abs(w - ideal), -w))
