"""Doing one claimed unit of work: a trial, or a job's finalization."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from models.io import checkpoint_bytes
from search import (
    JobSpec,
    ParetoPoint,
    PruningProblem,
    TrialResult,
    candidate_info,
    conclude_search,
    pareto_front,
    requeue_trial,
    run_one_trial,
    select_best,
    trial_points,
)
from service.errors import ServiceError
from service.store import (
    BlobStore,
    Claim,
    ClaimKind,
    Job,
    JobStatus,
    TrialOutcome,
    drop_trial_artifacts_except,
    fail_job,
    finish_finalize,
    finish_trial,
    hand_back_finalize,
    put_artifact,
    release_finalize,
    set_best_so_far,
    set_lease_trial,
)
from service.worker._checkpoints import StoreCheckpoints
from service.worker._remote_meter import WaitAbandoned
from service.worker._retry import retry_database

__all__ = ["UnitContext", "kept_trials", "run_finalize_unit", "run_trial_unit"]

logger = logging.getLogger(__name__)


@dataclass
class UnitContext:
    """What a unit of work needs from its worker."""

    sessions: sessionmaker[Session]
    blobs: BlobStore
    storage: optuna.storages.BaseStorage
    worker_id: str
    max_failed_trials: int
    stop_requested: Callable[[], bool]
    max_trial_attempts: int = 3


def best_so_far(point: ParetoPoint) -> dict[str, Any]:
    """Return a job's ``best`` while it searches: the trial's search measurements (the test
    accuracy and final numbers come with finalization)."""
    return {
        "trial": point.trial,
        "plan": point.plan,
        "macs": point.macs,
        "params": point.params,
        "latency_ms": point.latency_ms,
        "val_accuracy": point.val_accuracy,
        "finalized": False,
    }


def kept_trials(
    spec: JobSpec, trials: list[optuna.trial.FrozenTrial], *, searching: bool = True
) -> set[int]:
    """Return the trials whose weights a job keeps: the Pareto front and the best; while
    it searches, also the trials running, paused (a rung search may continue them) or
    resumed by a queued trial (rung checkpoints are how another worker continues a
    candidate)."""
    points = trial_points(trials)
    front = pareto_front([p for p in points if p.feasible], with_latency=spec.measures_latency)
    keep = {p.trial for p in front}
    best = select_best(spec, trials)
    if best is not None:
        keep.add(best.trial)
    states = optuna.trial.TrialState
    running = {t.number for t in trials if t.state == states.RUNNING}
    # a lost candidate queued to resume needs the checkpoint of the trial it continues
    resuming = {
        int(t.user_attrs["resume_of"])
        for t in trials
        if t.state in (states.WAITING, states.RUNNING) and "resume_of" in t.user_attrs
    }
    if not searching:
        return keep
    paused = {t.number for t in trials if t.user_attrs.get("skipped") == "paused"}
    return keep | running | resuming | paused


def run_trial_unit(
    ctx: UnitContext, claim: Claim, problem: PruningProblem, study: optuna.Study
) -> TrialOutcome:
    """Evaluate one trial of the claimed job and release the lease; return its outcome."""
    started = time.perf_counter()
    number: list[int] = []

    def on_ask(trial: optuna.Trial) -> None:
        number.append(trial.number)

        def record() -> None:
            with ctx.sessions.begin() as session:
                set_lease_trial(session, claim.lease_id, trial.number)

        retry_database(record, what="record the trial on its lease")

    checkpoints = StoreCheckpoints(ctx.sessions, ctx.blobs, claim.job_id)

    def on_trial(result: TrialResult, model: nn.Module | None) -> None:
        if model is None or not result.feasible:
            return
        trials = study.get_trials(deepcopy=False)
        keep = kept_trials(problem.spec, trials)
        best = select_best(problem.spec, trials)
        with ctx.sessions.begin() as session:
            if best is not None:
                set_best_so_far(
                    session, claim.job_id, best_so_far(best), problem.baseline.to_dict()
                )
            # a candidate trained in rungs is stored already, lineage and all
            if result.number in keep and problem.fidelity is None:
                info = candidate_info(problem, model, result.plan, trial=result.number)
                put_artifact(
                    session,
                    ctx.blobs,
                    job_id=claim.job_id,
                    kind=ClaimKind.trial,
                    trial_number=result.number,
                    fmt="safetensors",
                    data=checkpoint_bytes(model, info),
                )
            drop_trial_artifacts_except(session, claim.job_id, keep)

    promoted: list[int] = []
    state, error, job_failure, failure_code = TrialOutcome.complete, None, False, ""
    try:
        result = run_one_trial(
            problem,
            study,
            on_ask=on_ask,
            on_trial=on_trial,
            checkpoints=checkpoints,
            on_promote=promoted.append,
        )
        if result is None:
            state, error = TrialOutcome.fail, _last_error(study, number)
        elif result.values is None:
            state = TrialOutcome.pruned
    except KeyboardInterrupt:
        state, error = TrialOutcome.abandoned, "the worker was stopped"
        if number:  # handed back: resumed from its last rung, or redone
            requeue_trial(study, study.trials[number[0]], max_attempts=ctx.max_trial_attempts)
        raise
    except ServiceError as exc:
        # artifacts could not be written (disk full, read-only root), or the job's target
        # device does not answer: retrying the trial cannot help, the job fails
        cancelled = isinstance(exc, WaitAbandoned)  # the job's cancel ends it, not a failure
        state = TrialOutcome.abandoned if cancelled else TrialOutcome.fail
        error = exc.message
        job_failure, failure_code = exc.code in JOB_FATAL_CODES, exc.code
        _fail_in_optuna(study, number)
        logger.error("trial of job %s failed: %s", claim.job_id, exc.message)
    except Exception as exc:
        state, error = TrialOutcome.fail, f"{type(exc).__name__}: {exc}"
        _fail_in_optuna(study, number)
        logger.exception("trial of job %s failed", claim.job_id, extra={"job": claim.job_id})
    finally:

        def release() -> None:
            with ctx.sessions.begin() as session:
                finish_trial(
                    session,
                    claim.lease_id,
                    state=state,
                    seconds=time.perf_counter() - started,
                    trial_number=number[0] if number else None,
                    worker_id=ctx.worker_id,
                    error=error,
                    max_failed_trials=ctx.max_failed_trials,
                    more_trials=sum(promoted),
                )
                if state == TrialOutcome.fail and job_failure:
                    fail_job(session, claim.job_id, failure_code, error or failure_code)

        retry_database(release, what="release the trial's lease")
    return state


def _fail_in_optuna(study: optuna.Study, number: list[int]) -> None:
    """Mark the trial failed in Optuna if an error left it running (best effort)."""
    if not number:
        return
    try:
        if study.trials[number[0]].state == optuna.trial.TrialState.RUNNING:
            study.tell(number[0], state=optuna.trial.TrialState.FAIL)
    except Exception:  # the database may be what failed; the reaper cleans up then
        logger.debug("could not fail trial %d in Optuna", number[0], exc_info=True)


def _last_error(study: optuna.Study, number: list[int]) -> str | None:
    if not number:
        return None
    return study.trials[number[0]].user_attrs.get("error")


JOB_FATAL_CODES = frozenset({"storage_error", "device_unavailable"})
"""Service errors that fail the job at the first trial that meets them: artifacts that
cannot be written, a target device that does not answer."""

FINAL_ARTIFACTS = {
    "model.safetensors": ("final", "safetensors"),
    "model.onnx": ("final", "onnx"),
    "pareto.png": ("job", "png"),
}
"""Where each file of a :class:`search.Conclusion` goes in the store: (kind, format)."""


def run_finalize_unit(
    ctx: UnitContext, claim: Claim, problem: PruningProblem, study: optuna.Study
) -> JobStatus:
    """Conclude the claimed job with the library's one lifecycle and store the outcome.

    A worker told to stop during the final fine-tune hands the finalization back
    (the job stays ``finalizing`` until another worker claims it); a cancelled job ends
    ``cancelled``.

    Returns:
        The job's new status.
    """
    spec = problem.spec
    trials = study.get_trials(deepcopy=False)
    conclusion = conclude_search(
        problem,
        trials,
        storage="(service store)",
        study_name=claim.study_name,
        should_stop=_cancel_checker(ctx, claim.job_id),
        checkpoints=StoreCheckpoints(ctx.sessions, ctx.blobs, claim.job_id),
        job=claim.job_id,
    )
    if conclusion.status == "cancelled" and not _cancel_requested(ctx, claim.job_id):
        # the worker was told to stop, not the job: the next worker finalizes it
        with ctx.sessions.begin() as session:
            hand_back_finalize(session, claim.lease_id)
        return JobStatus.finalizing
    if conclusion.status != "succeeded":
        cancelled = conclusion.status == "cancelled"
        with ctx.sessions.begin() as session:
            release_finalize(
                session,
                claim.lease_id,
                status=JobStatus.cancelled if cancelled else JobStatus.failed,
                error_code=None if cancelled else conclusion.status,
                error_message=None if cancelled else conclusion.message,
            )
        return JobStatus.cancelled if cancelled else JobStatus.failed
    final = conclusion.final
    assert final is not None
    report = conclusion.report

    def store() -> None:
        with ctx.sessions.begin() as session:
            for name, data in conclusion.artifacts.items():
                kind, fmt = FINAL_ARTIFACTS[name]
                put_artifact(
                    session,
                    ctx.blobs,
                    job_id=claim.job_id,
                    kind=kind,
                    trial_number=final.trial if kind == "final" else -1,
                    fmt=fmt,
                    data=data,
                )
            drop_trial_artifacts_except(
                session, claim.job_id, kept_trials(spec, trials, searching=False)
            )
            finish_finalize(
                session,
                claim.lease_id,
                baseline=report["baseline"],
                best={**report["best"], "finalized": True},
                report=report,
            )

    retry_database(store, what="store the final model")
    return JobStatus.succeeded


def _cancel_checker(ctx: UnitContext, job_id: str, every_s: float = 2.0) -> Any:
    """Return ``check(force=False) -> bool``: whether the job's cancel was requested,
    asking the database at most every ``every_s`` seconds."""
    last = {"t": 0.0, "value": False}

    def check(force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - last["t"] >= every_s:
            last["t"] = now
            last["value"] = _cancel_requested(ctx, job_id)
        return bool(last["value"]) or ctx.stop_requested()

    return check


def _cancel_requested(ctx: UnitContext, job_id: str) -> bool:
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        return bool(job is None or job.cancel_requested)
