"""Compute as the user's knob: how a job's training epochs are spent, rung by rung.

A job with ``search.compute_epochs`` runs successive halving with reduction factor
:data:`ETA` (Jamieson & Talwalkar 2016; asynchronous, as ASHA, Li et al. 2020): every
candidate trains ``rungs[0]`` epochs; the best third continue *from their own weights*
to ``rungs[1]`` epochs in total, and so on. The best candidate of the top rung is trained
on, from its weights, to ``final_epochs`` in total and delivered. Nothing trained on the
winner is thrown away, and the whole job spends at most ``compute_epochs``.

The split: :data:`FINAL_SHARE` of the compute is the delivered model's whole training
(its rungs included); the rest pays for the candidates that lose. The one-shot
baselines' plans (the warm starts) are *references*: they go on through every rung by
right, and the plan pays for them there beside each rung's best third, so the top rung
always holds at least :data:`TOP_ENTRANTS` candidates (a rung with one entrant decides
nothing). The first rung is at least :data:`MIN_FIRST_RUNG` epochs long while the
compute allows (shorter fine-tunes rank plans by noise); more compute buys more
candidates, then a third rung. This module is torch-free: the API process uses
:func:`plan_fidelity` to know a job's trial count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from search.spec import JobSpec

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "ETA",
    "FINAL_SHARE",
    "MAX_RUNGS",
    "MIN_FIRST_RUNG",
    "REFERENCE_KINDS",
    "TOP_ENTRANTS",
    "FidelityPlan",
    "compute_spent",
    "plan_fidelity",
    "planned_trials",
    "promotable_by_rank",
    "references",
]

ETA = 3
"""Reduction factor: a third of a rung's candidates go on to the next."""

MAX_RUNGS = 3
"""Most search rungs (lengths r, 3r, 9r epochs) before the winner's final training."""

TOP_ENTRANTS = 2
"""Fewest candidates the top rung must be planned to hold."""

MIN_FIRST_RUNG = 0.5
"""Shortest first rung, in epochs, while the compute allows :data:`TOP_ENTRANTS` at the
top at all; below that the first rung shrinks rather than the top rung going uncontested."""

REFERENCE_KINDS = ("uniform", "global", "sensitivity", "depth")
"""The warm starts of a budgeted job, in the order a study tries them (the one list:
``search.warm_start.WARM_STARTS`` is this); ``depth`` only where the search removes
blocks."""

FINAL_SHARE = 0.75
"""Share of ``compute_epochs`` that is the delivered model's whole training (its search
rungs included). Measured (``search_quality.py --final-share``, resnet20 on a 6,000-image
Fashion-MNIST subset, 10 epochs of compute, 12.5 % and 6.25 % of the MACs, seeds 0-1):
0.75 delivered 0.3 to 2.0 points more test accuracy than 0.5 in every cell tried; at this
size a longer fine-tune of a good plan is worth more than a wider search."""


@dataclass(frozen=True)
class FidelityPlan:
    """How a job's compute is spent.

    Attributes:
        compute_epochs: the job's whole budget, in epochs of the training split.
        trials: candidates started at the first rung.
        rungs: epochs a candidate has trained in total at the end of each search rung
            (strictly increasing).
        final_epochs: epochs the delivered model trains in total, its rungs included.
        eta: the reduction factor.
        references: warm starts (the one-shot baselines' plans) that go on through every
            rung by right; the plan pays for them beside the best third.
    """

    compute_epochs: float
    trials: int
    rungs: tuple[float, ...]
    final_epochs: float
    eta: int = ETA
    references: int = 0

    @property
    def search_epochs(self) -> float:
        """Epochs the search may spend before the winner's final training."""
        return self.compute_epochs - (self.final_epochs - self.rungs[-1])

    def report_step(self, rung: int) -> int:
        """Return the step a rung's accuracy is reported at (Optuna's successive halving
        pruner with ``min_resource=1`` sees rung ``k`` at step ``eta ** k``)."""
        return int(self.eta**rung)

    def planned_trials(self) -> int:
        """Return the trials a search runs if every rung promotes exactly a third: the
        candidates plus one continuation per promotion (for progress bars; warm starts
        going on by right, or paused candidates promoted late, may add a few)."""
        return self.trials + sum(
            _entrants(self.trials, k, self.eta, self.references) for k in range(1, len(self.rungs))
        )

    def planned_epochs(self) -> float:
        """Return what the search spends if every rung promotes exactly a third."""
        spent = 0.0
        previous = 0.0
        for k, length in enumerate(self.rungs):
            spent += _entrants(self.trials, k, self.eta, self.references) * (length - previous)
            previous = length
        return spent

    def snapped(self, steps_per_epoch: int) -> FidelityPlan:
        """Return the plan with every rung a whole number of optimizer steps (rounded
        down, so that the plan stays affordable; at least one more than the rung before),
        as training will run it."""
        ends: list[int] = []
        for epochs in self.rungs:
            whole = math.floor(epochs * steps_per_epoch + 1e-9)
            ends.append(max(ends[-1] + 1 if ends else 1, whole))
        rungs = tuple(end / steps_per_epoch for end in ends)
        return replace(self, rungs=rungs, final_epochs=max(self.final_epochs, rungs[-1]))

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as report JSON."""
        return {
            "compute_epochs": self.compute_epochs,
            "trials": self.trials,
            "rungs": list(self.rungs),
            "final_epochs": self.final_epochs,
            "eta": self.eta,
            "references": self.references,
        }


def _entrants(trials: int, rung: int, eta: int = ETA, references: int = 0) -> int:
    """Return the candidates rung ``rung`` holds when each rung promotes a third (at least
    one) and ``references`` go on by right (at most every candidate)."""
    if rung == 0:
        return trials
    return min(trials, max(1, trials // eta**rung) + references)


def _losers_cost(trials: int, rungs: int, references: int, eta: int = ETA) -> float:
    """Return the epochs the losing candidates spend, in units of ``rungs[0]``: every rung
    ``k`` trains its entrants ``rungs[k] - rungs[k-1]`` more, less the winner's own rungs
    (which are part of the delivered model's training)."""
    spent = float(trials)
    for k in range(1, rungs):
        spent += _entrants(trials, k, eta, references) * (eta**k - eta ** (k - 1))
    return spent - eta ** (rungs - 1)


def _most_candidates(budget: float, first: float, rungs: int, references: int) -> int:
    """Return the most candidates whose losers fit ``budget`` with rungs from ``first``
    (at least one more than the references)."""
    trials = references + 1
    while _losers_cost(trials + 1, rungs, references) * first <= budget + 1e-9:
        trials += 1
    return trials


def references(spec: JobSpec) -> int:
    """Return the warm starts a job's study begins with (``search.warm_start``): the
    uniform, global-magnitude and sensitivity plans with a MACs or parameter budget, and
    the half-depth one when the search removes blocks; the half-width uniform plan
    without a budget (at most: equal plans are tried once, and a model without removable
    blocks has no half-depth plan)."""
    budget = spec.budget
    limited = budget.flops is not None or budget.macs is not None or budget.params is not None
    if not limited:
        return 1
    return len(REFERENCE_KINDS) - (0 if spec.searches_depth else 1)


def plan_fidelity(spec: JobSpec) -> FidelityPlan | None:
    """Return how the spec's ``compute_epochs`` is spent, or None without it.

    Without an explicit ``search.trials`` the plan takes the most rungs (up to
    :data:`MAX_RUNGS`) whose top rung still holds :data:`TOP_ENTRANTS` candidates with a
    first rung of :data:`MIN_FIRST_RUNG` epochs, then as many candidates as those rungs
    afford, then stretches the rungs to spend what is left. When even two rungs cannot
    hold that many at that length, two rungs hold the fewest such candidates, shorter.
    With ``search.trials`` set explicitly the rungs are as long as the compute allows
    (fewer rungs when even the top one would outgrow the final training).
    """
    compute = spec.search.compute_epochs
    if compute is None:
        return None
    final = FINAL_SHARE * compute
    losers = compute - final
    refs = references(spec)
    if "trials" not in spec.search.model_fields_set:
        for count in range(MAX_RUNGS, 1, -1):
            trials = _most_candidates(losers, MIN_FIRST_RUNG, count, refs)
            if _losers_cost(trials, count, refs) * MIN_FIRST_RUNG > losers + 1e-9:
                continue  # not even the references and one more fit at this length
            if _entrants(trials, count - 1, ETA, refs) >= TOP_ENTRANTS:
                break
        else:
            count, trials = 2, refs + 1
        first = min(losers / _losers_cost(trials, count, refs), final / ETA ** (count - 1))
        rungs = tuple(first * ETA**k for k in range(count))
        return FidelityPlan(compute, trials, rungs, final, references=refs)
    trials = spec.search.trials
    refs = min(refs, trials)
    for count in range(MAX_RUNGS, 0, -1):
        unit = _losers_cost(trials, count, refs)
        first = losers / unit if unit > 0 else final / ETA ** (count - 1)
        if first * ETA ** (count - 1) <= final or count == 1:
            first = min(first, final / ETA ** (count - 1))
            rungs = tuple(first * ETA**k for k in range(count))
            return FidelityPlan(compute, trials, rungs, final, references=refs)
    raise AssertionError("unreachable: one rung always fits")


def planned_trials(spec: JobSpec) -> int:
    """Return how many candidates the job evaluates: the fidelity plan's with
    ``compute_epochs``, else ``search.trials``."""
    fidelity = plan_fidelity(spec)
    return fidelity.trials if fidelity is not None else spec.search.trials


def compute_spent(trials: Sequence[FrozenTrial]) -> float:
    """Return the epochs trained by every trial so far (running and failed ones too:
    compute spent is spent)."""
    return sum(float(t.user_attrs.get("epochs_trained", 0.0)) for t in trials)


def promotable_by_rank(
    mine: Sequence[float], others: Sequence[Sequence[float]], eta: int = ETA
) -> bool:
    """Return whether a candidate belongs to the best ``1/eta`` of its rung by
    non-dominated rank (the pareto counterpart of successive halving, which Optuna's
    pruners do not offer for several objectives).

    Every vector holds losses (smaller is better; negate accuracies). The candidate and
    the rung's earlier entrants are sorted by non-dominated rank, then by the first loss;
    the candidate goes on when its place is within ``len // eta`` (at least the first
    place; :func:`search.promotion.is_promotable` asks for ``eta`` entrants before it asks
    this, since a paused candidate can still go on later).

    Args:
        mine: the candidate's losses at this rung.
        others: the losses of the candidates that reached this rung before it.
        eta: the reduction factor.
    """
    points = [tuple(mine), *(tuple(o) for o in others)]
    ranks = _nondominated_ranks(points)
    order = sorted(range(len(points)), key=lambda i: (ranks[i], points[i][0], i))
    places = max(1, len(points) // eta)
    return order.index(0) < places


def _nondominated_ranks(points: Sequence[tuple[float, ...]]) -> list[int]:
    """Return each point's front number (0 = not dominated by any other)."""
    ranks = [-1] * len(points)
    left = set(range(len(points)))
    front = 0
    while left:
        current = {
            i
            for i in left
            if not any(
                all(a <= b for a, b in zip(points[j], points[i], strict=True))
                and points[j] != points[i]
                for j in left
            )
        }
        for i in current:
            ranks[i] = front
        left -= current
        front += 1
    return ranks
