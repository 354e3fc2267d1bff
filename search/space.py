"""The search space: one integer per group (and per stage of blocks), and budget-aware
projection of samples.

Each prunable group contributes one integer parameter, the channels it keeps, from its
minimum to its full width in steps of ``round_to``. With depth (``pruning.depth``),
each module that holds removable residual blocks (a ResNet stage) contributes one more,
``depth:<module>``: how many of its blocks are removed, those that change their input
the least (:func:`models.prune.block_contributions`, measured when the problem loads),
or spread evenly over the stage without that (:func:`models.prune.spread_removal`); the
groups inside removed blocks then do not matter. Depth is never changed by projection.
A sampled width vector that breaks the MACs/parameter budget is *projected*: every
group is shrunk toward its minimum by the same fraction of its slack, the largest
fraction that fits (binary search on the analytic cost model, and the device's layer
latency table for a latency budget with ``latency.predictor: table``), then single
steps are handed back greedily while the budget allows. The objective is thus a
deterministic function of the sampled vector, the sampler learns on its own
coordinates, and nearly every trial is feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import optuna
from optuna.distributions import BaseDistribution, IntDistribution

from models.cost import AnalyticCost, Cost
from models.prune import (
    ChannelGroup,
    Plan,
    PruningGraph,
    block_containers,
    removal_order,
    spread_removal,
)
from search.budget import ResolvedBudget
from search.errors import BudgetUnreachableError

__all__ = ["DEPTH_PREFIX", "FLOORS_ATTR", "SearchSpace", "study_floors"]

DEPTH_PREFIX = "depth:"
"""Trial parameters named ``depth:<module>`` count the blocks removed from ``<module>``
(``depth:`` alone for blocks at the top level)."""

FLOORS_ATTR = "space_floors"
"""Study user attribute holding the sensitivity prior's per-group floors (set once when
the study is created; every worker samples within them)."""

_BISECTION_STEPS = 24
# ways to round a kept fraction to whole steps of a group
_ROUNDINGS: dict[str, Callable[[float], int]] = {
    "down": math.floor,
    "nearest": round,
    "up": math.ceil,
}


class SearchSpace:
    """Widths the search may choose, and how samples are made to fit the budget.

    Immutable after construction; safe to share between threads.
    """

    def __init__(
        self,
        graph: PruningGraph,
        cost: AnalyticCost,
        budget: ResolvedBudget,
        latency: Callable[[Mapping[str, int]], float] | None = None,
        *,
        depth: bool = False,
        contributions: Mapping[str, float] | None = None,
    ) -> None:
        """Args:
        graph: the model's groups.
        cost: predicts MACs and parameters of a plan.
        budget: the limits samples are projected onto.
        latency: predicts a plan's median latency in ms (the device's layer table);
            with it, samples are projected onto ``budget.max_latency_ms`` too.
        depth: also search how many removable blocks (``graph.blocks``) each stage loses.
        contributions: each removable block's contribution
            (:func:`models.prune.block_contributions`): a stage loses its blocks
            smallest contribution first. Without them the removed blocks are spread
            evenly over the stage.
        """
        self.graph = graph
        self.cost = cost
        self.budget = budget
        self.latency = latency if budget.max_latency_ms is not None else None
        self.groups: tuple[ChannelGroup, ...] = tuple(g for g in graph.groups if g.prunable)
        self.stages: dict[str, tuple[str, ...]] = block_containers(graph.blocks) if depth else {}
        """Removable blocks by the module that holds them (empty without depth)."""
        self.contributions = dict(contributions) if contributions and self.stages else None
        self._orders = (
            {s: removal_order(blocks, self.contributions) for s, blocks in self.stages.items()}
            if self.contributions
            else None
        )

    # -- depth --------------------------------------------------------------------------
    def removal(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Return the plan entries (block → 0) that remove ``counts[stage]`` blocks of each
        stage: those of the smallest contributions, or without contributions spread
        evenly over it."""
        out: dict[str, int] = {}
        for stage, blocks in self.stages.items():
            count = min(int(counts.get(stage, 0)), len(blocks))
            if self._orders is not None:
                out |= dict.fromkeys(sorted(self._orders[stage][:count], key=blocks.index), 0)
            else:
                out |= dict.fromkeys(spread_removal(blocks, count), 0)
        return out

    def removed_counts(self, plan: Mapping[str, int]) -> dict[str, int]:
        """Return how many blocks of each stage ``plan`` removes."""
        return {
            stage: sum(1 for b in blocks if plan.get(b, 1) == 0)
            for stage, blocks in self.stages.items()
        }

    def _live(self, removed: Mapping[str, int]) -> tuple[ChannelGroup, ...]:
        """Return the searched groups that are not inside a removed block."""
        if not removed:
            return self.groups
        live = set(self.graph.live_groups(removed))
        return tuple(g for g in self.groups if g in live)

    # -- parameters ---------------------------------------------------------------------
    def distributions(self, floors: Mapping[str, int] | None = None) -> dict[str, BaseDistribution]:
        """Return the Optuna distribution of every searched group, by group name.

        A group whose width is not ``min + k * step`` (an odd channel count) is searched
        over the index of its allowed widths instead, under the name ``<group>#index``.
        ``floors`` (a prior: see :func:`search.sensitivity_allocation.prior_floors`) raises a
        group's lowest width to the narrowest allowed width at or above its floor.
        """
        out: dict[str, BaseDistribution] = {}
        for g in self.groups:
            allowed = g.allowed_widths()
            low = _lowest(allowed, (floors or {}).get(g.name))
            if (g.channels - g.min_channels) % g.step == 0:
                out[g.name] = IntDistribution(allowed[low], g.channels, step=g.step)
            else:
                out[f"{g.name}#index"] = IntDistribution(low, len(allowed) - 1)
        for stage, blocks in self.stages.items():
            out[DEPTH_PREFIX + stage] = IntDistribution(0, len(blocks))
        return out

    def widths_from_params(self, params: Mapping[str, int]) -> dict[str, int]:
        """Return the plan of a trial's parameters (see :meth:`distributions`): a width
        per group outside the removed blocks, and 0 per removed block."""
        removed = self.removal(
            {stage: int(params.get(DEPTH_PREFIX + stage, 0)) for stage in self.stages}
        )
        widths = {}
        for g in self._live(removed):
            if g.name in params:
                widths[g.name] = int(params[g.name])
            elif f"{g.name}#index" in params:
                widths[g.name] = g.allowed_widths()[int(params[f"{g.name}#index"])]
            else:
                widths[g.name] = g.channels
        return {**widths, **removed}

    def params_from_widths(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Return the trial parameters that give ``widths`` (inverse of the above, for a
        plan whose removed blocks are those :meth:`removal` picks)."""
        params = {}
        for g in self.groups:
            width = int(widths.get(g.name, g.channels))
            if (g.channels - g.min_channels) % g.step == 0:
                params[g.name] = width
            else:
                params[f"{g.name}#index"] = g.allowed_widths().index(width)
        for stage, count in self.removed_counts(widths).items():
            params[DEPTH_PREFIX + stage] = count
        return params

    def suggest(
        self, trial: optuna.Trial, floors: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """Ask ``trial`` for one width per group, none below its floor, and return them
        (before projection)."""
        params: dict[str, int] = {}
        for name, dist in self.distributions(floors).items():
            assert isinstance(dist, IntDistribution)
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step)
        return self.widths_from_params(params)

    # -- budget -------------------------------------------------------------------------
    def fits(self, widths: Mapping[str, int]) -> bool:
        """Return whether ``widths`` meets the MACs and parameter limits (analytically),
        and the latency limit as predicted, when the space has a latency predictor."""
        if not self.budget.admits_cost(self.cost.predict(widths)):
            return False
        limit = self.budget.max_latency_ms
        return self.latency is None or limit is None or self.latency(widths) <= limit

    def smallest(self) -> Plan:
        """Return the plan keeping every group at its minimum (and, with depth, removing
        every removable block): the cheapest reachable."""
        everything = self.removal({stage: len(blocks) for stage, blocks in self.stages.items()})
        return Plan({**{g.name: g.min_channels for g in self._live(everything)}, **everything})

    def check_reachable(self) -> None:
        """Raise :class:`BudgetUnreachableError` if even :meth:`smallest` breaks the budget."""
        floor = self.cost.predict(self.smallest())
        if self.fits(self.smallest()):
            return
        base = self.cost.baseline
        parts = []
        if self.latency is not None and self.budget.max_latency_ms is not None:
            fastest = self.latency(self.smallest())
            if fastest > self.budget.max_latency_ms:
                parts.append(
                    f"the smallest plan is predicted to take {fastest:.3f} ms, over the "
                    f"limit of {self.budget.max_latency_ms:g} ms; set budget.latency_ms to "
                    f"at least {fastest:.3f}"
                )
        if self.budget.max_macs is not None and floor.macs > self.budget.max_macs:
            parts.append(
                f"the smallest plan still needs {floor.macs:,} MACs "
                f"({floor.macs / base.macs:.1%} of the original), over the limit of "
                f"{self.budget.max_macs:,}; set budget.flops to at least "
                f"{floor.macs / base.macs:.3f} (or budget.macs to at least {floor.macs:,})"
            )
        if self.budget.max_params is not None and floor.params > self.budget.max_params:
            parts.append(
                f"the smallest plan still has {floor.params:,} parameters "
                f"({floor.params / base.params:.1%} of the original), over the limit of "
                f"{self.budget.max_params:,}; set budget.params to at least "
                f"{floor.params / base.params:.3f}"
            )
        raise BudgetUnreachableError(
            "; ".join(parts) + " (a smaller pruning.round_to allows narrower layers)",
            fields=(
                "budget.flops",
                "budget.macs",
                "budget.params",
                "budget.latency_ms",
                "pruning.round_to",
            ),
        )

    def _shrunk(
        self,
        widths: Mapping[str, int],
        alpha: float,
        floors: Mapping[str, int],
        removed: Mapping[str, int],
    ) -> dict[str, int]:
        out = dict(removed)
        for g in self._live(removed):
            w = widths.get(g.name, g.channels)
            if w == g.channels and (g.channels - g.min_channels) % g.step:
                w = g.min_channels + ((g.channels - g.min_channels) // g.step) * g.step
            base = min(w, max(g.min_channels, floors.get(g.name, g.min_channels)))
            slack_steps = (w - base) // g.step
            out[g.name] = base + int(slack_steps * alpha) * g.step
        return out

    def project(self, widths: Mapping[str, int], floors: Mapping[str, int] | None = None) -> Plan:
        """Return ``widths`` if it fits the budget, else the nearest fitting plan below it.

        Every group shrinks toward its minimum (or its floor, when ``floors`` give one
        and the floors themselves fit) by the same fraction of its slack (the largest
        that fits), then groups get single steps back, widest deficit first, while the
        budget allows. Never returns a plan wider than ``widths`` in any group. The
        blocks ``widths`` removes stay removed; only when even the narrowest widths do
        not fit with them are more removed (:meth:`_deepen`).

        Raises:
            BudgetUnreachableError: no plan fits (see :meth:`check_reachable`).
        """
        removed = {b: 0 for b in self.graph.removed_blocks(widths) if self.stages}
        live = self._live(removed)
        full = {**{g.name: widths.get(g.name, g.channels) for g in live}, **removed}
        if self.fits(full):
            return Plan(full)
        self.check_reachable()
        if not self.fits(self._shrunk(full, 0.0, {}, removed)):
            removed = self._deepen(removed)
            live = self._live(removed)
            full = {**{g.name: full.get(g.name, g.channels) for g in live}, **removed}
        toward = dict(floors or {})
        if toward and not self.fits(self._shrunk(full, 0.0, toward, removed)):
            toward = {}  # the floors alone break the budget: shrink toward the minimum
        low, high = 0.0, 1.0  # fits at low, not at high
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2
            if self.fits(self._shrunk(full, mid, toward, removed)):
                low = mid
            else:
                high = mid
        plan = self._shrunk(full, low, toward, removed)
        by_deficit = sorted(live, key=lambda g: plan[g.name] - full[g.name])
        for g in by_deficit:
            while plan[g.name] + g.step <= full[g.name]:
                plan[g.name] += g.step
                if not self.fits(plan):
                    plan[g.name] -= g.step
                    break
        return Plan(plan)

    def _deepen(self, removed: Mapping[str, int]) -> dict[str, int]:
        """Return ``removed`` with blocks added, one at a time from the stage that has
        lost the smallest share of its blocks, until the narrowest widths fit."""
        counts = self.removed_counts(removed)
        while True:
            open_stages = [s for s, blocks in self.stages.items() if counts[s] < len(blocks)]
            if not open_stages:
                return self.removal(counts)  # everything: check_reachable said it fits
            stage = min(open_stages, key=lambda s: counts[s] / len(self.stages[s]))
            counts[stage] += 1
            deeper = self.removal(counts)
            if self.fits(self._shrunk(deeper, 0.0, {}, deeper)):
                return deeper

    def uniform_at_budget(self) -> Plan:
        """Return the widest uniform plan (same kept fraction everywhere) that fits.

        This is the usual one-shot baseline (Torch-Pruning's ``pruning_ratio`` chosen to
        meet the budget); the search starts from it. Widths must be multiples of the
        group's step, so the kept fraction is rounded per group; with narrow groups
        (16 channels, step 8) each way of rounding leaves a different part of the
        budget unused. The largest fitting fraction is found for rounding down, to the
        nearest and up, and the plan that uses the most of the budget is returned. Only
        when no widths fit the whole model (a budget that depth alone reaches) are the
        fewest blocks removed that make them fit (:meth:`_deepen`).
        """
        self.check_reachable()
        plan = self.uniform_at_depth({})
        if plan is None:
            plan = self.uniform_at_depth(self._deepen({}))
        assert plan is not None  # reachable: the smallest plan fits
        return plan

    def uniform_at_depth(self, removed: Mapping[str, int]) -> Plan | None:
        """Return the widest uniform plan that fits with the blocks ``removed`` (block →
        0, e.g. from :meth:`removal`) gone, as :meth:`uniform_at_budget` does for the
        whole model; None when even the narrowest widths do not fit with them."""
        gone = dict(removed)
        top = {**{g.name: g.channels for g in self._live(gone)}, **gone}
        if self.fits(top):
            return Plan(top)
        if not self.fits(self._shrunk(gone, 0.0, {}, gone)):
            return None
        candidates = [self._widest_uniform(rounding, gone) for rounding in _ROUNDINGS]
        return Plan(max(candidates, key=lambda plan: self.predict(plan).macs))

    def _widest_uniform(self, rounding: str, removed: Mapping[str, int]) -> dict[str, int]:
        low, high = 0.0, 1.0
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2
            if self.fits(self._uniform(mid, rounding, removed)):
                low = mid
            else:
                high = mid
        return self._uniform(low, rounding, removed)

    def _uniform(self, keep: float, rounding: str, removed: Mapping[str, int]) -> dict[str, int]:
        out = dict(removed)
        for g in self._live(removed):
            steps = g.channels * keep / g.step
            whole = _ROUNDINGS[rounding](steps)
            out[g.name] = min(g.channels, max(g.min_channels, whole * g.step))
        return out

    def predict(self, plan: Mapping[str, int]) -> Cost:
        """Return the analytic cost of ``plan``."""
        return self.cost.predict(plan)


def _lowest(allowed: list[int], floor: int | None) -> int:
    """Return the index of the narrowest allowed width at or above ``floor`` (0 without
    one; the widest if the floor is above every width)."""
    if floor is None:
        return 0
    for index, width in enumerate(allowed):
        if width >= floor:
            return index
    return len(allowed) - 1


def study_floors(study: optuna.Study) -> dict[str, int] | None:
    """Return the floors ``study`` samples above, or None (no prior: a study without a
    sensitivity scan, or one created before the prior existed)."""
    floors = study.user_attrs.get(FLOORS_ATTR)
    return {str(k): int(v) for k, v in floors.items()} if isinstance(floors, dict) else None
