"""Jobs as tenants see them: create, read, list, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.store._states import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    SEARCHING_STATUSES,
    JobStatus,
    TrialOutcome,
)
from service.store._tables import Job, TrialLog, utcnow
from service.store._tokens import require_tenant

__all__ = [
    "JobNotFound",
    "NewJob",
    "count_active_jobs",
    "create_job",
    "find_by_idempotency_key",
    "get_job",
    "list_jobs",
    "recent_trials",
    "request_cancel",
    "set_job_detail",
    "trial_seconds",
]


class JobNotFound(ServiceError):
    """No job with that id belongs to the caller's tenant (others' jobs are not found)."""

    code = "not_found"
    status = 404


@dataclass(frozen=True)
class NewJob:
    """What the API stores when it accepts a job."""

    tenant: str
    spec: dict[str, Any]
    trials_total: int
    weights_blob_id: str | None = None
    dataset_blob_id: str | None = None
    dataset_filename: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


def create_job(session: Session, new: NewJob) -> Job:
    """Insert a queued job and return it (flushed, not committed).

    Raises:
        TenantNotFound: the tenant was deleted (all its tokens revoked).
    """
    require_tenant(session, new.tenant)
    job_id = uuid.uuid4().hex
    job = Job(
        id=job_id,
        tenant=new.tenant,
        status=JobStatus.queued,
        spec=new.spec,
        study_name=f"inferprune-job-{job_id}",
        weights_blob_id=new.weights_blob_id,
        dataset_blob_id=new.dataset_blob_id,
        dataset_filename=new.dataset_filename,
        trials_total=new.trials_total,
        trials_finished=0,
        trials_running=0,
        trials_failed=0,
        cancel_requested=False,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def find_by_idempotency_key(session: Session, tenant: str, key: str) -> Job | None:
    """Return the tenant's job created with ``key``, if any."""
    return session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    """Return the tenant's job ``job_id``.

    Raises:
        JobNotFound: no such job for this tenant (another tenant's job included).
    """
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None or job.tenant != tenant:
        shown = job_id if len(job_id) <= 64 else f"{job_id[:64]}…"  # never echo a long id
        raise JobNotFound(f"no job {shown!r}")
    return job


def list_jobs(session: Session, tenant: str, limit: int, offset: int) -> tuple[Sequence[Job], int]:
    """Return one page of the tenant's jobs, newest first, and the total count."""
    total = session.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant))
    rows = session.scalars(
        select(Job)
        .where(Job.tenant == tenant)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total or 0)


def count_active_jobs(session: Session, tenant: str) -> int:
    """Return how many of the tenant's jobs are queued, running or finalizing."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant == tenant, Job.status.in_(ACTIVE_STATUSES))
        )
        or 0
    )


def request_cancel(session: Session, tenant: str, job_id: str) -> Job:
    """Cancel a job: a queued one (or one no worker is on) at once; otherwise workers
    finish their current trial and take no new one.

    Raises:
        JobNotFound: not the tenant's job.
        ServiceError: the job already finished (409).
    """
    job = get_job(session, tenant, job_id)
    if job.status in FINISHED_STATUSES:
        raise ServiceError(
            f"job {job_id} already {job.status}; nothing to cancel", code="conflict", status=409
        )
    now = utcnow()
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(SEARCHING_STATUSES), Job.trials_running == 0)
        .values(status=JobStatus.cancelled, finished_at=now)
    )
    session.flush()
    session.refresh(job)
    return job


def recent_trials(session: Session, job_id: str, after_id: int = 0) -> Sequence[TrialLog]:
    """Return the job's trial log entries with id greater than ``after_id``, in order."""
    return session.scalars(
        select(TrialLog)
        .where(TrialLog.job_id == job_id, TrialLog.id > after_id)
        .order_by(TrialLog.id)
    ).all()


def trial_seconds(session: Session, job_id: str) -> tuple[float | None, int]:
    """Return the mean seconds of the job's finished trials and how many workers ran them."""
    finished = TrialLog.state.in_((TrialOutcome.complete, TrialOutcome.pruned))
    mean, workers = session.execute(
        select(
            func.avg(case((finished, TrialLog.seconds))),
            func.count(func.distinct(TrialLog.worker_id)),
        ).where(TrialLog.job_id == job_id)
    ).one()
    return (float(mean) if mean is not None else None), int(workers or 0)


def set_job_detail(session: Session, job_id: str, detail: str | None) -> None:
    """Say what the job is waiting for (a device's agent, ...), or clear it with None."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.detail.is_distinct_from(detail))
        .values(detail=detail)
        .execution_options(synchronize_session=False)
    )
