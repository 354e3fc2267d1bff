"""Asynchronous successive halving with paused candidates (ASHA, Li et al. 2020).

A candidate that finishes a rung goes on at once when it is among the best ``1/eta`` of
the candidates that finished that rung so far; otherwise it *pauses*: its trial ends
(told PRUNED, ``skipped="paused"``) with its checkpoint kept. Whenever a trial ends,
:func:`promote_paused` looks for paused candidates that the rung's later entrants have
made promotable and queues a continuation for each (a new trial with the same
parameters and ``resume_of``, the mechanism that also resumes lost trials), so no
worker waits for a rung to fill, and no candidate is judged before there is anyone to
judge it against. Optuna's pruners cannot do this: they decide at once and cannot
resume a pruned trial (their own comment says so), so single-objective jobs rank by the
objective value here, and several objectives by non-dominated rank.

The one-shot baselines' own plans (warm starts) are references: they go on through
every rung by right, so the winner is chosen between them and the best of the sampled
candidates at the top rung, never by a first rung's noise (the fidelity plan pays for
them: :attr:`search.fidelity.FidelityPlan.references`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.fidelity import FidelityPlan, compute_spent, promotable_by_rank
from search.pareto import ParetoPoint
from search.spec import JobSpec, directions

__all__ = [
    "Entry",
    "affordable",
    "fresh_started",
    "continuation_attrs",
    "is_promotable",
    "is_reference",
    "promote_paused",
    "rung_entries",
    "search_finished",
    "select_paused",
]

_ALIVE = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Entry:
    """One candidate's result at one rung."""

    candidate: int
    trial: int
    accuracy: float
    macs: float
    latency_ms: float | None
    score: float | None


def _candidate(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("candidate", t.number))


def rung_entries(trials: Sequence[FrozenTrial], rung: int) -> dict[int, Entry]:
    """Return, per candidate, its result at ``rung`` (from the latest trial that has it;
    a continuation carries its candidate's earlier rungs)."""
    entries: dict[int, Entry] = {}
    for t in sorted(trials, key=lambda t: t.number):
        reached = t.user_attrs.get("rung_accuracy") or []
        macs = t.user_attrs.get("macs")
        if t.state not in _ALIVE or len(reached) <= rung or not macs:
            continue
        scores = t.user_attrs.get("rung_score") or []
        entries[_candidate(t)] = Entry(
            candidate=_candidate(t),
            trial=t.number,
            accuracy=float(reached[rung]),
            macs=float(macs),
            latency_ms=t.user_attrs.get("latency_ms"),
            score=float(scores[rung]) if len(scores) > rung else None,
        )
    return entries


def _losses(spec: JobSpec, entry: Entry) -> list[float]:
    if directions(spec) == ["maximize"]:
        value = entry.score if entry.score is not None else entry.accuracy
        return [-value]
    row = [-entry.accuracy, entry.macs]
    if spec.measures_latency:
        row.append(entry.latency_ms if entry.latency_ms is not None else float("inf"))
    return row


def is_promotable(
    spec: JobSpec, fidelity: FidelityPlan, entries: dict[int, Entry], candidate: int
) -> bool:
    """Return whether ``candidate`` is among the best ``len(entries) // eta`` of its rung
    (by objective value, or by non-dominated rank for several objectives). Fewer than
    ``eta`` entrants promote nobody yet."""
    if len(entries) < fidelity.eta:
        return False
    mine = entries[candidate]
    others = [_losses(spec, e) for c, e in entries.items() if c != candidate]
    if directions(spec) == ["maximize"]:
        better = sum(1 for o in others if o[0] < _losses(spec, mine)[0])
        return better < len(entries) // fidelity.eta
    return promotable_by_rank(_losses(spec, mine), others, fidelity.eta)


def fresh_started(trials: Sequence[FrozenTrial]) -> int:
    """Return how many candidates have been started (continuations and failed attempts
    left out)."""
    return sum(
        1
        for t in trials
        if t.state in _ALIVE and "resume_of" not in t.user_attrs and "candidate" not in t.user_attrs
    )


def _committed(trials: Sequence[FrozenTrial], fidelity: FidelityPlan) -> float:
    """Return the epochs queued continuations will train (one rung each)."""
    total = 0.0
    for t in trials:
        if t.state == TrialState.WAITING and "resume_of" in t.user_attrs:
            done = len(t.user_attrs.get("rung_accuracy") or [])
            if 0 < done < len(fidelity.rungs):
                total += fidelity.rungs[done] - fidelity.rungs[done - 1]
    return total


def affordable(trials: Sequence[FrozenTrial], fidelity: FidelityPlan, epochs: float) -> bool:
    """Return whether the search can pay ``epochs`` more: its budget less what every trial
    spent, less the continuations already queued, less the first rung of every candidate
    not started yet."""
    waiting = max(0, fidelity.trials - fresh_started(trials))
    room = (
        fidelity.search_epochs
        - compute_spent(trials)
        - _committed(trials, fidelity)
        - waiting * fidelity.rungs[0]
    )
    return epochs <= room + 1e-9


def is_reference(fidelity: FidelityPlan, warm_start: bool, rung: int) -> bool:
    """Return whether a candidate that finished ``rung`` goes on by right: a warm start
    below the top rung, while the plan has references."""
    return warm_start and fidelity.references > 0 and rung + 1 < len(fidelity.rungs)


def promote_paused(spec: JobSpec, fidelity: FidelityPlan, study: optuna.Study) -> int:
    """Queue a continuation for every paused candidate that is now promotable and
    affordable, highest rung first; return how many were queued."""
    queued = 0
    # one read of the study, again only after a queued continuation changed it (its
    # rung's compute is committed, its candidate is moving)
    trials = study.get_trials(deepcopy=False)
    for rung in range(len(fidelity.rungs) - 2, -1, -1):
        entries = rung_entries(trials, rung)
        moving = {
            _candidate(t)
            for t in trials
            if len(t.user_attrs.get("rung_accuracy") or []) > rung + 1
            or (t.state in (TrialState.WAITING, TrialState.RUNNING) and "resume_of" in t.user_attrs)
        }
        for t in list(trials):  # this level's candidates, as read before any queued
            candidate = _candidate(t)
            paused = t.state == TrialState.PRUNED and t.user_attrs.get("skipped") == "paused"
            if not paused or t.user_attrs.get("rung") != rung or candidate in moving:
                continue
            reference = is_reference(fidelity, bool(t.user_attrs.get("warm_start")), rung)
            if not (reference or is_promotable(spec, fidelity, entries, candidate)):
                continue
            cost = fidelity.rungs[rung + 1] - fidelity.rungs[rung]
            if not affordable(trials, fidelity, cost):
                continue
            study.enqueue_trial(t.params, user_attrs=continuation_attrs(t, candidate))
            trials = study.get_trials(deepcopy=False)
            moving.add(candidate)
            queued += 1
    return queued


def continuation_attrs(trial: FrozenTrial, candidate: int) -> dict[str, object]:
    """Return the user attributes of a trial that continues ``trial``'s candidate."""
    attrs: dict[str, object] = {"resume_of": trial.number, "candidate": candidate}
    carried = ("rung_accuracy", "rung_loss", "rung_score", "proxy_accuracy")
    for key in (*carried, "warm_start", "warm_start_kind"):
        if key in trial.user_attrs:
            attrs[key] = trial.user_attrs[key]
    return attrs


def search_finished(study: optuna.Study, fidelity: FidelityPlan) -> bool:
    """Return whether a rung search is over: every candidate started, nothing queued or
    running."""
    trials = study.get_trials(deepcopy=False)
    if fresh_started(trials) < fidelity.trials:
        return False
    return not any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)


def select_paused(spec: JobSpec, trials: Sequence[FrozenTrial]) -> ParetoPoint | None:
    """Return the candidate to deliver when none reached the top rung (a compute budget
    too small for the plan's rungs): the best feasible paused candidate of the highest
    rung reached, by objective value (several objectives: the most accurate), or None."""
    paused = [
        t
        for t in trials
        if t.state == TrialState.PRUNED
        and t.user_attrs.get("skipped") == "paused"
        and t.user_attrs.get("val_accuracy") is not None
        and all(v <= 0 for v in t.constraints.values())
    ]
    if not paused:
        return None
    top = max(int(t.user_attrs["rung"]) for t in paused)
    level = [t for t in paused if int(t.user_attrs["rung"]) == top]

    def value(t: FrozenTrial) -> float:
        scores = t.user_attrs.get("rung_score") or []
        if directions(spec) == ["maximize"] and scores:
            return float(scores[-1])
        return float(t.user_attrs["val_accuracy"])

    best = max(level, key=lambda t: (value(t), -int(t.user_attrs["macs"])))
    attrs = best.user_attrs
    return ParetoPoint(
        trial=best.number,
        val_accuracy=float(attrs["val_accuracy"]),
        macs=int(attrs["macs"]),
        params=int(attrs["params"]),
        latency_ms=attrs.get("latency_ms"),
        feasible=True,
        plan=dict(attrs.get("plan", {})),
    )
