"""The result of a sensitivity scan: an immutable record and its JSON form.

A :class:`Sensitivity` holds, per prunable group, the validation accuracy of the model
with that group alone narrowed to a few widths (:func:`search.sensitivity.scan_sensitivity`
measures it). It depends only on the weights, the data, the criterion, the channel step
and the scanned fractions, not on the budget, so one scan serves every job on the same
model (the service caches it, as :meth:`Sensitivity.to_dict` writes it; see
``service.store``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from search.errors import SearchError

__all__ = ["GroupSensitivity", "Sensitivity", "SensitivityPoint"]

_FORMAT = 1  # version of to_dict's layout; from_dict refuses others


class SensitivityPoint(NamedTuple):
    """One scanned width of one group (every other group at full width)."""

    width: int
    macs: int
    val_accuracy: float


@dataclass(frozen=True)
class GroupSensitivity:
    """The scan of one group: its full width and the points, widest first."""

    name: str
    channels: int
    points: tuple[SensitivityPoint, ...]


@dataclass(frozen=True)
class Sensitivity:
    """The result of :func:`scan_sensitivity`; immutable, JSON round-trips.

    Attributes:
        criterion: the channel criterion the narrowed candidates were pruned with.
        baseline_accuracy: the unpruned model's validation accuracy, as trained.
        reference_accuracy: the unpruned model's validation accuracy after the same
            BatchNorm recalibration the candidates get; drops are measured from it, so
            that the recalibration's own effect is not charged to any group.
        baseline_macs: the unpruned model's MACs (analytic, as the points' are).
        fractions: the kept fractions that were asked for.
        groups: one entry per prunable group, in the graph's order.
        seconds: wall-clock time of the scan.
    """

    criterion: str
    baseline_accuracy: float
    reference_accuracy: float
    baseline_macs: int
    fractions: tuple[float, ...]
    groups: tuple[GroupSensitivity, ...]
    seconds: float = 0.0

    def group(self, name: str) -> GroupSensitivity:
        """Return the scan of group ``name``.

        Raises:
            KeyError: the scan has no such group.
        """
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def drop(self, name: str, width: int) -> float:
        """Return the accuracy lost (from ``reference_accuracy``) when group ``name``
        alone keeps ``width`` channels.

        Linear between scanned widths, 0 at full width, and never smaller at a narrower
        width than at a wider one (a lucky point does not make narrowing look free);
        below the narrowest scanned width the last segment's slope continues, up to
        losing all accuracy.
        """
        g = self.group(name)
        knots = [(g.channels, 0.0)]
        worst = 0.0
        for point in sorted(g.points, key=lambda p: -p.width):
            worst = max(worst, self.reference_accuracy - point.val_accuracy)
            knots.append((point.width, worst))
        if width >= g.channels:
            return 0.0
        for (w_hi, d_hi), (w_lo, d_lo) in zip(knots, knots[1:], strict=False):
            if w_lo <= width <= w_hi:
                return d_hi + (d_lo - d_hi) * (w_hi - width) / (w_hi - w_lo)
        # narrower than every scanned width
        (w_hi, d_hi), (w_lo, d_lo) = knots[-2], knots[-1]
        slope = (d_lo - d_hi) / (w_hi - w_lo)
        return min(self.reference_accuracy, d_lo + slope * (w_lo - width))

    def to_dict(self) -> dict[str, Any]:
        """Return the scan as JSON-safe data (read back with :meth:`from_dict`)."""
        return {
            "format": _FORMAT,
            "criterion": self.criterion,
            "baseline_accuracy": self.baseline_accuracy,
            "reference_accuracy": self.reference_accuracy,
            "baseline_macs": self.baseline_macs,
            "fractions": list(self.fractions),
            "seconds": self.seconds,
            "groups": [
                {
                    "name": g.name,
                    "channels": g.channels,
                    "points": [
                        {"width": p.width, "macs": p.macs, "val_accuracy": p.val_accuracy}
                        for p in g.points
                    ],
                }
                for g in self.groups
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Sensitivity:
        """Return the scan ``data`` describes (as :meth:`to_dict` writes it).

        Raises:
            SearchError: ``data`` is not such a description (wrong format version,
                missing or mistyped fields, widths outside ``[1, channels)``,
                accuracies outside ``[0, 1]``, a group named twice).
        """
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchError(f"not a sensitivity scan: {exc}") from None


def _number(value: Any, what: str, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(value: Any, what: str, *, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a whole number, got {value!r}")
    _number(value, what, low=low, high=high)
    return value


def _parse(data: Any) -> Sensitivity:
    if not isinstance(data, Mapping):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    if data.get("format") != _FORMAT:
        raise ValueError(f"format must be {_FORMAT}, got {data.get('format')!r}")
    criterion = data["criterion"]
    if not isinstance(criterion, str) or not criterion:
        raise TypeError(f"criterion must be a name, got {criterion!r}")
    groups: list[GroupSensitivity] = []
    for item in data["groups"]:
        name = item["name"]
        if not isinstance(name, str) or not name:
            raise TypeError(f"group name must be text, got {name!r}")
        if any(g.name == name for g in groups):
            raise ValueError(f"group {name!r} appears twice")
        channels = _integer(item["channels"], f"{name}: channels", low=1)
        points = tuple(
            SensitivityPoint(
                _integer(p["width"], f"{name}: width", low=1, high=channels - 1),
                _integer(p["macs"], f"{name}: macs", low=0),
                _number(p["val_accuracy"], f"{name}: val_accuracy", low=0.0, high=1.0),
            )
            for p in item["points"]
        )
        if not points:
            raise ValueError(f"group {name!r} has no scanned width")
        if len({p.width for p in points}) != len(points):
            raise ValueError(f"group {name!r} names a width twice")
        groups.append(GroupSensitivity(name, channels, points))
    return Sensitivity(
        criterion=criterion,
        baseline_accuracy=_number(data["baseline_accuracy"], "baseline_accuracy", low=0, high=1),
        reference_accuracy=_number(data["reference_accuracy"], "reference_accuracy", low=0, high=1),
        baseline_macs=_integer(data["baseline_macs"], "baseline_macs", low=1),
        fractions=tuple(_number(f, "fraction", low=0.0, high=1.0) for f in data["fractions"]),
        groups=tuple(groups),
        seconds=_number(data.get("seconds", 0.0), "seconds", low=0.0),
    )
