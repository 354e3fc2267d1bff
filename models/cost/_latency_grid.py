"""Measured latencies of one kernel template on a grid of channel counts, interpolated."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Grid", "grid_axis", "reachable_channels"]


def reachable_channels(
    channels: int,
    by_group: Sequence[tuple[str, int]],
    widths: Mapping[str, tuple[int, Sequence[int]]],
) -> set[int]:
    """Return every channel count a tensor can have over all plans.

    Args:
        channels: the tensor's channels in the unpruned network.
        by_group: ``(group, n)``: ``n`` of them shrink with the group.
        widths: group -> (its channels, the widths a plan may give it).

    Returns:
        The reachable counts: ``channels - sum(n * (1 - w / C))`` over every choice of
        widths ``w`` (rounded as the plan's channels are).
    """
    sums = {float(channels - sum(n for _, n in by_group))}
    for group, n in by_group:
        total, allowed = widths[group]
        sums = {round(s + n * w / total, 6) for s in sums for w in allowed}
    return {max(1, round(s)) for s in sums}


def grid_axis(values: Iterable[int], points: int, boundary: int) -> tuple[int, ...]:
    """Return at most about ``points`` of ``values`` to measure, spread evenly by rank.

    The smallest and largest value are always kept, and so are the values either side
    of ``boundary`` (onnxruntime's NCHWc block), where a convolution changes kernels,
    so that no interpolation spans it.
    """
    ordered = sorted(set(values))
    if len(ordered) <= points:
        return tuple(ordered)
    last = len(ordered) - 1
    chosen = {ordered[round(i * last / (points - 1))] for i in range(points)}
    below = [v for v in ordered if v < boundary]
    above = [v for v in ordered if v >= boundary]
    if below and above:
        chosen |= {below[-1], above[0]}
    return tuple(sorted(chosen))


@dataclass(frozen=True)
class Grid:
    """A kernel's latency (ms) measured at every point of a 1-D or 2-D channel grid.

    Attributes:
        axes: the channel values measured, ascending, per axis.
        values: the latencies, row-major over the axes (the first axis varies slowest).
    """

    axes: tuple[tuple[int, ...], ...]
    values: tuple[float, ...]

    def at(self, coords: Sequence[int]) -> float:
        """Return the latency at ``coords``, linearly (bilinearly) interpolated between the
        nearest grid values and held constant past the ends."""
        if len(self.axes) == 1:
            (i, f) = _locate(self.axes[0], coords[0])
            v = self.values
            return v[i] if f == 0.0 else v[i] + f * (v[i + 1] - v[i])
        (i, f), (j, g) = _locate(self.axes[0], coords[0]), _locate(self.axes[1], coords[1])
        width = len(self.axes[1])
        v = self.values
        row = v[i * width + j] + (g * (v[i * width + j + 1] - v[i * width + j]) if g else 0.0)
        if f == 0.0:
            return row
        k = (i + 1) * width + j
        below = v[k] + (g * (v[k + 1] - v[k]) if g else 0.0)
        return row + f * (below - row)

    def points(self) -> list[tuple[int, ...]]:
        """Return the grid's coordinates in the order of :attr:`values`."""
        if len(self.axes) == 1:
            return [(a,) for a in self.axes[0]]
        return [(a, b) for a in self.axes[0] for b in self.axes[1]]


def _locate(axis: tuple[int, ...], x: int) -> tuple[int, float]:
    """Return (i, f): ``x`` lies a fraction ``f`` of the way from ``axis[i]`` to the next."""
    if x <= axis[0]:
        return 0, 0.0
    if x >= axis[-1]:
        return len(axis) - 1, 0.0
    i = bisect.bisect_right(axis, x) - 1
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])
