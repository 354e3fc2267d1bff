"""Turning rows and Optuna trials into the wire schemas."""

from __future__ import annotations

import threading
import time
from typing import Any

from optuna.trial import FrozenTrial
from sqlalchemy.orm import Session

from service.api.schemas import (
    ErrorDetail,
    JobLinks,
    JobPublic,
    JobStatus,
    Progress,
    TrialPublic,
)
from service.store import Job, trial_seconds

__all__ = ["job_public", "progress_of", "trial_public"]


_STATS_TTL_S = 1.0
_stats_cache: dict[str, tuple[float, tuple[float | None, int]]] = {}
_stats_lock = threading.Lock()


def _trial_stats(session: Session, job_id: str) -> tuple[float | None, int]:
    """Mean trial seconds and worker count of a job, cached for a second: status polls
    come much more often than trials finish."""
    now = time.monotonic()
    with _stats_lock:
        cached = _stats_cache.get(job_id)
        if cached is not None and now - cached[0] < _STATS_TTL_S:
            return cached[1]
    stats = trial_seconds(session, job_id)
    with _stats_lock:
        if len(_stats_cache) > 4096:
            _stats_cache.clear()
        _stats_cache[job_id] = (now, stats)
    return stats


def progress_of(session: Session, job: Job) -> Progress:
    """Return the job's progress, with an ETA from its finished trials so far.

    ETA = remaining trials × mean trial seconds ÷ workers that served the job, plus the
    final fine-tune (estimated as that many trials' worth of training: final_epochs ÷
    epochs_per_trial of them).
    """
    total, done = job.trials_total, min(job.trials_finished, job.trials_total)
    status = JobStatus(job.status)
    finetune = job.spec.get("finetune") or {}
    per_trial = max(float(finetune.get("epochs_per_trial") or 0.0), 0.25)
    final_units = max(1.0, float(finetune.get("final_epochs") or 0.0) / per_trial)
    fraction = (done + (final_units if status == JobStatus.succeeded else 0.0)) / (
        total + final_units
    )
    eta: float | None = None
    if status.is_finished:
        eta, fraction = 0.0, (1.0 if status == JobStatus.succeeded else fraction)
    else:
        mean, workers = _trial_stats(session, job.id)
        if mean is not None:
            parallel = max(1, workers, job.trials_running)
            eta = (total - done) * mean / parallel + final_units * mean
            if status == JobStatus.finalizing:
                eta = final_units * mean
    return Progress(
        trials_done=done,
        trials_total=total,
        fraction=round(min(fraction, 1.0), 4),
        eta_s=round(eta, 1) if eta is not None else None,
        trials_running=job.trials_running,
        trials_failed=job.trials_failed,
    )


def job_public(session: Session, job: Job) -> JobPublic:
    """Return the API view of a job row."""
    base = f"/v1/jobs/{job.id}"
    error = None
    if job.error_code:
        error = ErrorDetail(code=job.error_code, message=job.error_message or job.error_code)
    return JobPublic(
        id=job.id,
        status=JobStatus(job.status),
        spec=job.spec,
        progress=progress_of(session, job),
        baseline=job.baseline,
        best=job.best,
        error=error,
        detail=job.detail if not JobStatus(job.status).is_finished else None,
        pretrained=job.weights_blob_id is not None,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=JobLinks(
            self=base,
            trials=f"{base}/trials",
            pareto=f"{base}/pareto",
            pareto_png=f"{base}/pareto.png",
            checkpoint=f"{base}/checkpoint",
            events=f"{base}/events",
        ),
    )


def trial_public(trial: FrozenTrial, kept: set[int]) -> TrialPublic:
    """Return the API view of an Optuna trial."""
    attrs: dict[str, Any] = trial.user_attrs
    return TrialPublic(
        number=trial.number,
        state=trial.state.name.lower(),
        values=list(trial.values) if trial.values else None,
        val_accuracy=attrs.get("val_accuracy"),
        proxy_accuracy=attrs.get("proxy_accuracy"),
        macs=attrs.get("macs"),
        params=attrs.get("params"),
        nonzero_params=attrs.get("nonzero_params"),
        effective_macs=attrs.get("effective_macs"),
        latency_ms=attrs.get("latency_ms"),
        latency_p90_ms=attrs.get("latency_p90_ms"),
        latency_device=attrs.get("latency_device"),
        latency_source=attrs.get("latency_source"),
        feasible=attrs.get("feasible"),
        skipped=attrs.get("skipped"),
        plan=attrs.get("plan"),
        seconds=attrs.get("seconds"),
        error=attrs.get("error"),
        has_checkpoint=trial.number in kept,
    )
