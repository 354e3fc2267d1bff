"""How many channels each group keeps: the :class:`Plan` record and its validation."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from models.errors import PlanError
from models.prune._graph import ChannelGroup, PruningGraph

__all__ = ["Plan", "complete_plan", "uniform_plan", "validate_plan"]


@dataclass(frozen=True)
class Plan(Mapping[str, int]):
    """An immutable mapping from group name to the number of channels it keeps.

    A plan is the whole description of a structured pruning: applied to the same
    architecture with the same criterion it replays the same surgery, so it is what
    checkpoints store and what the search optimizes. Groups a plan does not name keep
    all their channels. Depth is in the same mapping: a removable residual block
    (:attr:`PruningGraph.blocks`) named with width 0 is removed whole, and the groups
    rooted inside it go with it (their widths, if named, do not matter).
    """

    widths: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, int] = {}
        for name, width in dict(self.widths).items():
            if isinstance(width, bool) or not isinstance(width, int | float) or width != int(width):
                raise PlanError(f"group {name!r}: width must be an integer, got {width!r}")
            clean[str(name)] = int(width)
        object.__setattr__(self, "widths", MappingProxyType(clean))

    def __getitem__(self, name: str) -> int:
        return self.widths[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.widths)

    def __len__(self) -> int:
        return len(self.widths)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.widths.items())))

    def width(self, group: ChannelGroup) -> int:
        """Return the channels ``group`` keeps under this plan (all of them if unnamed)."""
        return self.widths.get(group.name, group.channels)

    def to_dict(self) -> dict[str, int]:
        """Return a plain ``{group: width}`` dict, e.g. for JSON."""
        return dict(self.widths)

    def to_json(self) -> str:
        """Return the plan as compact JSON text."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Parse a plan written by :meth:`to_json` (or any ``{name: int}`` JSON object).

        Raises:
            PlanError: not a JSON object of integers.
        """
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("plan"), dict):
            data = data["plan"]  # accept a report's "best" entry or {"plan": {...}}
        if not isinstance(data, dict):
            raise PlanError('a plan must be a JSON object such as {"layer1.0.conv1": 8}')
        return cls(data)


def validate_plan(plan: Mapping[str, int], graph: PruningGraph) -> Plan:
    """Check ``plan`` against ``graph`` and return it as a :class:`Plan`.

    Raises:
        PlanError: a name is neither a group nor a removable block of this model, or a
            width is not allowed (a block's only width is 0); the message lists the close
            names or the allowed widths.
    """
    plan = plan if isinstance(plan, Plan) else Plan(plan)
    by_name = {g.name: g for g in graph.groups}
    blocks = set(graph.blocks)
    for name, width in plan.items():
        group = by_name.get(name)
        if group is None and name in blocks:
            if width != 0:
                raise PlanError(
                    f"{name!r} is a residual block: width 0 removes it, leave it out to keep "
                    f"it (got {width})"
                )
            continue
        if group is None:
            close = difflib.get_close_matches(name, [*by_name, *blocks], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PlanError(
                f"{name!r} is not a prunable group or removable block of this model{hint} "
                "(`inferprune groups --arch ...` lists them)"
            )
        if not group.is_allowed(width):
            raise PlanError(
                f"group {name!r} has {group.channels} channels; it may keep "
                f"{_describe_widths(group)}, not {width}"
            )
    return plan


def complete_plan(plan: Mapping[str, int], graph: PruningGraph) -> Plan:
    """Return ``plan`` spelled out: the width of every group left in the model, and 0
    for every block it removes (what a checkpoint records, so that the structure can be
    rebuilt without defaults)."""
    live = {g.name: plan.get(g.name, g.channels) for g in graph.live_groups(plan)}
    return Plan({**live, **dict.fromkeys(graph.removed_blocks(plan), 0)})


def _describe_widths(group: ChannelGroup) -> str:
    widths = group.allowed_widths()
    if len(widths) <= 6:
        return ", ".join(map(str, widths))
    return (
        f"{widths[0]}, {widths[1]}, ..., {widths[-2]} (multiples of {group.step}) "
        f"or all {group.channels}"
    )


def uniform_plan(graph: PruningGraph, ratio: float) -> Plan:
    """Return the plan that removes the fraction ``ratio`` of every group's channels.

    This is Torch-Pruning's ``pruning_ratio``: each group keeps
    ``channels - int(channels * ratio)``, rounded down to its step and never below its
    minimum.

    Raises:
        PlanError: ``ratio`` is outside [0, 1).
    """
    if not 0.0 <= ratio < 1.0:
        raise PlanError(f"ratio must be in [0, 1), got {ratio}")
    widths = {}
    for g in graph.groups:
        keep = g.channels - int(g.channels * ratio)
        if keep != g.channels:
            keep = max(g.min_channels, keep - keep % g.step)
        widths[g.name] = keep
    return Plan(widths)
