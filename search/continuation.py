"""A candidate that goes on: what a continuation takes from the trial it resumes (its
checkpoint, its measured cost and latency) and the rule that decides, after each rung,
whether a candidate trains on (:mod:`search.promotion`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
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

__all__ = ["inherited_measurements", "resumed_candidate", "rung_promoter"]

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


def rung_promoter(
    problem: PruningProblem, trial: optuna.Trial, macs: int, latency_ms: float | None
) -> Callable[[int, float, float], bool]:
    """Return the job's rule for going on after a rung (see :mod:`search.promotion`):
    ``promote(rung, accuracy, next_epochs)`` is True when the candidate is a reference
    or among the best of the rung's entrants so far, and the compute left pays for
    ``next_epochs`` more. Both are judged on one read of the study's trials.

    For one maximized objective the rung's objective value is also reported to Optuna
    (``trial.report`` at step ``3**rung``) and kept as ``rung_score`` (before the read,
    so the candidate's own entry carries it), so that TPE ranks the trials that stopped
    by the rung they reached, as in BOHB.
    """
    fidelity = problem.fidelity
    assert fidelity is not None
    spec = problem.spec
    single = directions(spec) == ["maximize"]
    candidate = int(trial.user_attrs.get("candidate", trial.number))

    def promote(rung: int, accuracy: float, next_epochs: float) -> bool:
        if single:
            value = objective_values(problem, accuracy, macs, 0, latency_ms)[0]
            scores = list(trial.user_attrs.get("rung_score") or [])[:rung] + [value]
            trial.set_user_attr("rung_score", scores)
            trial.report(value, step=fidelity.report_step(rung))
        trials = trial.study.get_trials(deepcopy=False)
        if not affordable(trials, fidelity, next_epochs):
            return False
        if is_reference(fidelity, bool(trial.user_attrs.get("warm_start")), rung):
            return True
        entries = rung_entries(trials, rung)
        return candidate in entries and is_promotable(spec, fidelity, entries, candidate)

    return promote
