"""A plan at the budget from a sensitivity scan, and the prior it puts on the search.

:func:`allocate_by_sensitivity` turns a :class:`~search.sensitivity_record.Sensitivity`
into a plan at the budget (greedy, as AIMET's channel-pruning ratio selection and
ModelOpt's FastNAS do): the steps that cost the least accuracy per MAC saved go first.
:func:`prior_floors` derives from that plan the narrowest width the search should sample
per group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from models.cost import Cost
from models.prune import Plan
from search.errors import SearchError
from search.sensitivity_record import Sensitivity
from search.space import SearchSpace

__all__ = ["allocate_by_sensitivity", "prior_floors"]


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
