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

from models.io import checkpoint_bytes, onnx_model_bytes
from models.prune import Plan
from search import (
    JobSpec,
    ParetoPoint,
    PruningProblem,
    TrialResult,
    build_report,
    checkpoint_info,
    finalize,
    measure_baseline,
    pareto_front,
    plot_pareto,
    run_one_trial,
    select_best,
    trial_points,
)
from service.errors import ServiceError
from service.store import (
    BlobStore,
    Claim,
    Job,
    drop_trial_artifacts_except,
    fail_job,
    finish_finalize,
    finish_trial,
    put_artifact,
    release_finalize,
    set_best_so_far,
    set_lease_trial,
)
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


def kept_trials(spec: JobSpec, trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Return the trials whose weights a job keeps: the Pareto front and the best."""
    points = trial_points(trials)
    front = pareto_front([p for p in points if p.feasible], with_latency=spec.measures_latency)
    keep = {p.trial for p in front}
    best = select_best(spec, trials)
    if best is not None:
        keep.add(best.trial)
    return keep


def run_trial_unit(
    ctx: UnitContext, claim: Claim, problem: PruningProblem, study: optuna.Study
) -> str:
    """Evaluate one trial of the claimed job and release the lease; return its state."""
    started = time.perf_counter()
    number: list[int] = []

    def on_ask(trial: optuna.Trial) -> None:
        number.append(trial.number)

        def record() -> None:
            with ctx.sessions.begin() as session:
                set_lease_trial(session, claim.lease_id, trial.number)

        retry_database(record, what="record the trial on its lease")

    def on_trial(result: TrialResult, model: nn.Module | None) -> None:
        if model is None or not result.feasible:
            return
        trials = study.get_trials(deepcopy=False)
        keep = kept_trials(problem.spec, trials)
        best = select_best(problem.spec, trials)
        with ctx.sessions.begin() as session:
            if best is not None:
                set_best_so_far(session, claim.job_id, best_so_far(best))
            if result.number in keep:
                info = checkpoint_info(problem, result.plan.to_dict(), trial=result.number)
                put_artifact(
                    session,
                    ctx.blobs,
                    job_id=claim.job_id,
                    kind="trial",
                    trial_number=result.number,
                    fmt="safetensors",
                    data=checkpoint_bytes(model, info),
                )
            drop_trial_artifacts_except(session, claim.job_id, keep)

    state, error, storage_failure = "complete", None, False
    try:
        result = run_one_trial(problem, study, on_ask=on_ask, on_trial=on_trial)
        if result is None:
            state, error = "fail", _last_error(study, number)
        elif result.values is None:
            state = "pruned"
    except KeyboardInterrupt:
        state, error = "abandoned", "the worker was stopped"
        _retry_later(study, number)
        raise
    except ServiceError as exc:
        # artifacts could not be written (disk full, read-only root): retrying cannot help
        state, error = "fail", exc.message
        storage_failure = exc.code == "storage_error"
        logger.error("trial of job %s failed: %s", claim.job_id, exc.message)
    except Exception as exc:
        state, error = "fail", f"{type(exc).__name__}: {exc}"
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
                )
                if state == "fail" and storage_failure:
                    fail_job(session, claim.job_id, "storage_error", error or "storage error")

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


def _retry_later(study: optuna.Study, number: list[int]) -> None:
    """Queue the parameters of an abandoned trial so that another worker redoes it."""
    if not number:
        return
    trial = study.trials[number[0]]
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def run_finalize_unit(
    ctx: UnitContext, claim: Claim, problem: PruningProblem, study: optuna.Study
) -> str:
    """Finalize the claimed job: train the chosen plan, store model, plot and report.

    Returns:
        The job's new status.
    """
    spec = problem.spec
    trials = study.get_trials(deepcopy=False)
    best = select_best(spec, trials)
    if best is None:
        with ctx.sessions.begin() as session:
            release_finalize(
                session,
                claim.lease_id,
                status="failed",
                error_code="no_feasible_trial",
                error_message=f"none of the {len(trials)} trials met the budget; "
                "loosen it or ask for more trials",
            )
        return "failed"
    cancelled = _cancel_checker(ctx, claim.job_id)
    started = time.perf_counter()
    final = finalize(
        problem,
        Plan(best.plan),
        best.trial,
        search_val_accuracy=best.val_accuracy,
        should_stop=cancelled,
    )
    if cancelled(force=True):
        with ctx.sessions.begin() as session:
            release_finalize(session, claim.lease_id, status="cancelled")
        return "cancelled"
    baseline = measure_baseline(problem)
    report = build_report(
        problem,
        trials,
        baseline=baseline,
        final=final,
        storage="(service store)",
        study_name=claim.study_name,
        status="succeeded",
        timing={"finalize_s": round(time.perf_counter() - started, 2)},
    )
    info = checkpoint_info(problem, final.plan.to_dict(), trial=final.trial, job=claim.job_id)
    weights = checkpoint_bytes(final.model, info)
    onnx = onnx_model_bytes(final.model, problem.input_shape)
    png = _pareto_png(problem, trials, final.trial)

    def store() -> None:
        with ctx.sessions.begin() as session:
            for fmt, data in (("safetensors", weights), ("onnx", onnx)):
                put_artifact(
                    session,
                    ctx.blobs,
                    job_id=claim.job_id,
                    kind="final",
                    trial_number=final.trial,
                    fmt=fmt,
                    data=data,
                )
            put_artifact(
                session,
                ctx.blobs,
                job_id=claim.job_id,
                kind="job",
                trial_number=-1,
                fmt="png",
                data=png,
            )
            drop_trial_artifacts_except(session, claim.job_id, kept_trials(spec, trials))
            finish_finalize(
                session,
                claim.lease_id,
                baseline=report["baseline"],
                best={**report["best"], "finalized": True},
                report=report,
            )

    retry_database(store, what="store the final model")
    return "succeeded"


def _pareto_png(problem: PruningProblem, trials: list[Any], chosen: int) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_pareto(
            trial_points(trials),
            Path(tmp) / "pareto.png",
            baseline_macs=problem.baseline.cost.macs,
            baseline_accuracy=problem.baseline.val_accuracy,
            chosen=chosen,
            max_macs=problem.budget.max_macs,
            title=f"{problem.info.arch} on {problem.data.name}",
        )
        return path.read_bytes()


def _cancel_checker(ctx: UnitContext, job_id: str, every_s: float = 2.0) -> Any:
    """Return ``check(force=False) -> bool``: whether the job's cancel was requested,
    asking the database at most every ``every_s`` seconds."""
    last = {"t": 0.0, "value": False}

    def check(force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - last["t"] >= every_s:
            last["t"] = now
            with ctx.sessions() as session:
                job = session.get(Job, job_id)
                last["value"] = bool(job is None or job.cancel_requested)
        return bool(last["value"]) or ctx.stop_requested()

    return check
