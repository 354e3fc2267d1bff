"""A candidate that goes on: what a continuation takes from the trial it resumes (its
checkpoint, its measured cost and latency) and the rule that decides, after each rung,
whether a candidate trains on (:mod:`search.promotion`)."""

from __future__ import annotations

import logging
from typing import Any

import optuna
from torch import nn

from models.cost import Cost
from models.prune import Plan
from search.checkpoints import CheckpointStore, Lineage, restore_candidate
from search.hybrid import has_sparse_steps
from search.problem import PruningProblem
from search.promotion import affordable, is_promotable, is_reference, rung_entries
from search.scores import objective_values
from search.spec import directions

__all__ = ["RungPromoter", "inherited_measurements", "resumed_candidate"]

logger = logging.getLogger(__name__)

_INHERITED = ("latency_device", "latency_source")
"""Attributes of its origin a continuation carries over with the cost and latency."""


def inherited_measurements(
    trial: optuna.Trial, sequence: Any
) -> tuple[Cost, float | None, float | None, dict[str, Any]] | None:
    """Return the cost, median and p90 latency and the attributes that record them of the
    trial a continuation resumes (``resume_of``): the same structure, so measuring them
    again would only cost time (fvcore and a latency measurement per rung). None when
    the origin did not finish recording them (a lost trial) or when its cost is sparse
    (a hybrid sequence's; measured again)."""
    if has_sparse_steps(sequence):
        return None
    origin = trial.user_attrs.get("resume_of")
    found = [t for t in trial.study.get_trials(deepcopy=False) if t.number == origin]
    if not found:
        return None
    attrs = found[0].user_attrs
    if any(not isinstance(attrs.get(k), int) for k in ("macs", "params", "size_bytes")):
        return None
    cost = Cost(attrs["macs"], attrs["params"], attrs["size_bytes"])
    recorded = {k: attrs[k] for k in _INHERITED if k in attrs}
    return cost, attrs.get("latency_ms"), attrs.get("latency_p90_ms"), recorded


def resumed_candidate(
    problem: PruningProblem, trial: optuna.Trial, checkpoints: CheckpointStore
) -> tuple[nn.Module, Plan, Lineage] | None:
    """Return the candidate of the trial this one resumes (``resume_of``), from its last
    rung's checkpoint, or None for a fresh candidate (or when nothing was saved)."""
    origin = trial.user_attrs.get("resume_of")
    if origin is None:
        return None
    data = checkpoints.load(int(origin))
    if data is None:
        logger.warning("trial %s left no checkpoint; starting afresh", origin)
        return None
    return restore_candidate(problem, data)


class RungPromoter:
    """The job's rule for going on after a rung (see :mod:`search.promotion`), for one
    candidate: called as ``promote(rung, accuracy, next_epochs)``, True when the candidate
    is a reference or among the best of the rung's entrants so far, and the compute left
    pays for ``next_epochs`` more. Both are judged on one read of the study's trials.

    For one maximized objective the rung's objective value is also kept as ``rung_score``
    (one per rung reached, the top one included: :meth:`rung_attrs`, written with the
    rung's own results, so that every worker sees them together) and reported to Optuna
    (``trial.report`` at step ``3**rung``, after every rung below the top), so that TPE
    ranks the trials that stopped by the rung they reached, as in BOHB.
    """

    def __init__(
        self, problem: PruningProblem, trial: optuna.Trial, macs: int, latency_ms: float | None
    ) -> None:
        assert problem.fidelity is not None
        self._problem = problem
        self._fidelity = problem.fidelity
        self._trial = trial
        self._macs = macs
        self._latency_ms = latency_ms
        self._single = directions(problem.spec) == ["maximize"]
        self._candidate = int(trial.user_attrs.get("candidate", trial.number))

    def _score(self, accuracy: float) -> float:
        return objective_values(self._problem, accuracy, self._macs, 0, self._latency_ms)[0]

    def rung_attrs(self, rung: int, accuracy: float) -> dict[str, Any]:
        """Return the attributes to write with the rung's results: ``rung_score``, the
        objective value at each rung so far (one maximized objective only)."""
        if not self._single:
            return {}
        earlier = list(self._trial.user_attrs.get("rung_score") or [])[:rung]
        return {"rung_score": [*earlier, self._score(accuracy)]}

    def __call__(self, rung: int, accuracy: float, next_epochs: float) -> bool:
        """Return whether the candidate trains its next rung now (its results for ``rung``
        written already, :meth:`rung_attrs` included)."""
        trial, fidelity = self._trial, self._fidelity
        if self._single:
            trial.report(self._score(accuracy), step=fidelity.report_step(rung))
        trials = trial.study.get_trials(deepcopy=False)
        if not affordable(trials, fidelity, next_epochs):
            return False
        if is_reference(fidelity, bool(trial.user_attrs.get("warm_start")), rung):
            return True
        entries = rung_entries(trials, rung)
        return self._candidate in entries and is_promotable(
            self._problem.spec, fidelity, entries, self._candidate
        )
