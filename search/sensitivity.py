"""Per-group sensitivity: the accuracy each group costs when it alone is narrowed.

A scan narrows one group at a time to a few widths (the rest of the model untouched),
re-estimates BatchNorm statistics exactly as a trial does before its fine-tune, and
evaluates validation accuracy: forward passes only, no training. The result says which
groups the model can spare channels from. :func:`allocate_by_sensitivity` turns it into
a plan at the budget (greedy, as AIMET's channel-pruning ratio selection and ModelOpt's
FastNAS do): the steps that cost the least accuracy per MAC saved go first.

A :class:`Sensitivity` depends only on the weights, the data, the criterion, the
channel step and the scanned fractions, not on the budget, so one scan serves every
job on the same model (the service caches it; see ``service.store``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from models.cost import Cost
from models.prune import ChannelGroup, Plan
from models.train import evaluate, recalibrate_batchnorm
from search.errors import SearchError
from search.problem import PruningProblem, build_candidate
from search.space import SearchSpace

__all__ = [
    "DEFAULT_FRACTIONS",
    "SCAN_BN_BATCHES",
    "GroupSensitivity",
    "Sensitivity",
    "SensitivityPoint",
    "allocate_by_sensitivity",
    "prior_floors",
    "scan_sensitivity",
    "scan_widths",
]

DEFAULT_FRACTIONS = (0.75, 0.5, 0.25)
"""Kept fractions of each group's channels a scan evaluates by default."""

SCAN_BN_BATCHES = 2
"""Batches of 64 training images forwarded to re-estimate each scanned candidate's
BatchNorm statistics. Twice a classic trial's (:data:`search.objective.BN_BATCHES`): the
scan's accuracies are all its plan is allocated from, with no fine-tune after them, and
the sensitivities cached in stores and the benchmarks' plans were measured with 2."""

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


# -- scanning ------------------------------------------------------------------------------
def scan_widths(group: ChannelGroup, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """Return the widths a scan evaluates for ``group``, widest first.

    For each fraction, the allowed width nearest ``fraction * channels`` (the narrower
    one on a tie); the full width and repeats are left out, so a group with few allowed
    widths gets fewer points (none when it cannot be narrowed).
    """
    allowed = [w for w in group.allowed_widths() if w < group.channels]
    chosen: list[int] = []
    for fraction in fractions:
        if not allowed:
            break
        target = fraction * group.channels
        width = min(allowed, key=lambda w: (abs(w - target), w))
        if width not in chosen:
            chosen.append(width)
    return sorted(chosen, reverse=True)


Progress = Callable[[int, int, str], None]
"""``on_point(done, total, group)`` after each evaluated width."""


def scan_sensitivity(
    problem: PruningProblem,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    on_point: Progress | None = None,
) -> Sensitivity:
    """Return the validation accuracy of the model with each group narrowed alone.

    Every candidate is pruned from the unpruned model with the job's channel scores,
    its BatchNorm statistics are re-estimated (:data:`SCAN_BN_BATCHES` batches, the same
    seeded batches for every candidate, so their differences are the widths'),
    and it is evaluated on the validation split. The unpruned model is recalibrated the
    same way for the reference. Nothing is trained; ``problem.model`` is not changed.

    Args:
        problem: the job's fixed inputs (its criterion, scores and space are used).
        fractions: kept fractions to evaluate per group (see :func:`scan_widths`).
        on_point: called after each evaluated width (progress).

    Returns:
        The :class:`Sensitivity`.

    Raises:
        SearchError: a fraction is not in (0, 1).
    """
    if not fractions or any(not 0.0 < f < 1.0 for f in fractions):
        raise SearchError(f"scan fractions must lie in (0, 1), got {list(fractions)}")
    started = time.perf_counter()
    seed = problem.spec.search.seed * 100_003  # the seed trial 0's recalibration uses
    plans = [(g, scan_widths(g, fractions)) for g in problem.space.groups]
    total = 1 + sum(len(widths) for _, widths in plans)

    def accuracy(plan: Plan) -> float:
        model = problem.place(build_candidate(problem, plan))
        recalibrate_batchnorm(model, problem.data.train, batches=SCAN_BN_BATCHES, seed=seed)
        return evaluate(model, problem.data.val).top1

    reference = accuracy(Plan())
    done = 1
    if on_point is not None:
        on_point(done, total, "unpruned")
    groups = []
    for group, widths in plans:
        points = []
        for width in widths:
            plan = Plan({group.name: width})
            macs = problem.space.predict(plan).macs
            points.append(SensitivityPoint(width, macs, accuracy(plan)))
            done += 1
            if on_point is not None:
                on_point(done, total, group.name)
        groups.append(GroupSensitivity(group.name, group.channels, tuple(points)))
    return Sensitivity(
        criterion=problem.spec.pruning.criterion,
        baseline_accuracy=problem.baseline.val_accuracy,
        reference_accuracy=reference,
        baseline_macs=problem.space.predict(Plan()).macs,
        fractions=tuple(float(f) for f in fractions),
        groups=tuple(groups),
        seconds=round(time.perf_counter() - started, 3),
    )


# -- allocation ----------------------------------------------------------------------------
def _saving(space: SearchSpace, before: Cost, after: Cost) -> float:
    """Return how much of the limited resources a change saves, as budget fractions."""
    budget = space.budget
    saved = 0.0
    if budget.max_macs is not None:
        saved += (before.macs - after.macs) / budget.max_macs
    if budget.max_params is not None:
        saved += (before.params - after.params) / budget.max_params
    return saved


def allocate_by_sensitivity(sensitivity: Sensitivity, space: SearchSpace) -> Plan:
    """Return a plan at ``space``'s budget that narrows the least sensitive groups most.

    Greedy: from full widths, one allowed step at a time is taken off the group whose
    next narrowing loses the least accuracy (:meth:`Sensitivity.drop`) per share of the
    budget it saves, until the plan fits; then single steps are handed back, the one
    that regains the most accuracy per share of the budget first, while it still fits.
    Ties go to the group that comes first in the space, so the result is deterministic.

    Args:
        sensitivity: a scan of the model ``space`` belongs to.
        space: the search space and its budget.

    Returns:
        A plan that fits the budget (the full widths when those fit).

    Raises:
        SearchError: the scan does not describe the space's groups (another model, or
            another channel step).
        BudgetUnreachableError: no plan fits the budget.
    """
    for g in space.groups:
        try:
            scanned = sensitivity.group(g.name)
        except KeyError:
            raise SearchError(f"the sensitivity scan has no group {g.name!r}; scan again") from None
        if scanned.channels != g.channels:
            raise SearchError(
                f"group {g.name!r} has {g.channels} channels, the scan says "
                f"{scanned.channels}; scan again"
            )
    allowed = {g.name: g.allowed_widths() for g in space.groups}
    index = {g.name: len(allowed[g.name]) - 1 for g in space.groups}

    def widths() -> dict[str, int]:
        return {name: allowed[name][i] for name, i in index.items()}

    if space.fits(widths()):
        return Plan(widths())
    space.check_reachable()
    current = space.predict(widths())
    while not space.fits(widths()):
        best: tuple[float, int, str, Cost] | None = None
        for order, g in enumerate(space.groups):
            i = index[g.name]
            if i == 0:
                continue
            trial = widths() | {g.name: allowed[g.name][i - 1]}
            cost = space.predict(trial)
            saved = _saving(space, current, cost)
            if saved <= 0:
                continue
            lost = sensitivity.drop(g.name, allowed[g.name][i - 1]) - sensitivity.drop(
                g.name, allowed[g.name][i]
            )
            candidate = (lost / saved, order, g.name, cost)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        if best is None:  # no step saves anything any more
            return space.project(widths())
        _, _, name, current = best
        index[name] -= 1
    while True:
        best = None
        for order, g in enumerate(space.groups):
            i = index[g.name]
            if i == len(allowed[g.name]) - 1:
                continue
            trial = widths() | {g.name: allowed[g.name][i + 1]}
            if not space.fits(trial):
                continue
            cost = space.predict(trial)
            spent = max(-_saving(space, current, cost), 1e-12)
            gained = sensitivity.drop(g.name, allowed[g.name][i]) - sensitivity.drop(
                g.name, allowed[g.name][i + 1]
            )
            candidate = (-gained / spent, order, g.name, cost)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        if best is None:
            return Plan(widths())
        _, _, name, current = best
        index[name] += 1


def prior_floors(
    sensitivity: Sensitivity, space: SearchSpace, plans: Sequence[Mapping[str, int]]
) -> dict[str, int]:
    """Return, per group, the narrowest width the search should sample: a prior that
    narrows the space to where the scan says accuracy survives.

    The sensitivity plan (:func:`allocate_by_sensitivity`) accepts, in its most cut
    group, some accuracy drop ``D``; a group's floor is its narrowest allowed width
    whose own drop is at most ``D`` (narrowing any group further costs more than the
    budget forced on the worst group of that plan), lowered to the narrowest width any
    of ``plans`` (the warm starts) gives it, so that every warm start lies inside the
    narrowed space and the all-floors plan fits the budget whenever they do.
    """
    allocated = allocate_by_sensitivity(sensitivity, space)
    limit = max(sensitivity.drop(g.name, allocated.width(g)) for g in space.groups)
    floors: dict[str, int] = {}
    for g in space.groups:
        allowed = g.allowed_widths()  # ascending
        floor = next((w for w in allowed if sensitivity.drop(g.name, w) <= limit), g.channels)
        for plan in plans:
            floor = min(floor, int(plan.get(g.name, g.channels)))
        floors[g.name] = floor
    return floors
