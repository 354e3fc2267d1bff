"""Claiming work: one atomic statement hands a worker a trial or a finalization.

Work is handed out one trial at a time, so several workers share a job and several
jobs share the workers: a claim picks the job with the fewest trials running, then
the one served longest ago. A claim is one ``UPDATE … RETURNING`` whose target row is
chosen by a subquery; on PostgreSQL that subquery takes ``FOR UPDATE SKIP LOCKED``, so
concurrent workers never wait on each other; SQLite runs the statement under its
single-writer lock. Every claim also inserts a lease the worker renews; a lease
past its expiry belongs to a dead worker and is reaped: its trial counts as a failed
attempt and the job goes on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.store._states import SEARCHING_STATUSES, ClaimKind, JobStatus
from service.store._tables import Job, Lease, utcnow

__all__ = ["Claim", "claim_work", "has_open_work", "set_lease_trial"]


@dataclass(frozen=True)
class Claim:
    """A unit of work a worker now holds."""

    lease_id: str
    kind: ClaimKind
    job_id: str
    spec: dict[str, Any]
    study_name: str
    weights_blob_id: str | None
    dataset_blob_id: str | None
    dataset_filename: str | None
    tenant: str


_CLAIM_COLUMNS = (
    Job.id,
    Job.tenant,
    Job.spec,
    Job.study_name,
    Job.weights_blob_id,
    Job.dataset_blob_id,
    Job.dataset_filename,
)


def _lease(
    session: Session, row: Any, kind: ClaimKind, worker_id: str, now: datetime, lease_seconds: float
) -> Claim:
    lease = Lease(
        id=uuid.uuid4().hex,
        job_id=row.id,
        kind=kind,
        worker_id=worker_id,
        acquired_at=now,
        expires_at=now + timedelta(seconds=lease_seconds),
    )
    session.add(lease)
    session.flush()
    return Claim(
        lease.id,
        kind,
        row.id,
        row.spec,
        row.study_name,
        row.weights_blob_id,
        row.dataset_blob_id,
        row.dataset_filename,
        row.tenant,
    )


def _open_for_trials(now: datetime) -> ColumnElement[bool]:
    """A job that still wants a trial evaluated: searching, not cancelled, trials left,
    before its deadline."""
    return and_(
        Job.status.in_(SEARCHING_STATUSES),
        Job.cancel_requested.is_(False),
        Job.trials_finished + Job.trials_running < Job.trials_total,
        or_(Job.deadline_at.is_(None), Job.deadline_at > now),
    )


def _ready_to_finalize(now: datetime) -> ColumnElement[bool]:
    """A job whose search is over (every trial done, or its deadline passed) with none
    in flight, waiting for its finalization."""
    return and_(
        Job.status == JobStatus.running,
        Job.trials_running == 0,
        Job.cancel_requested.is_(False),
        or_(Job.trials_finished >= Job.trials_total, Job.deadline_at <= now),
    )


def _claim_trial(
    session: Session, worker_id: str, now: datetime, lease_seconds: float
) -> Claim | None:
    open_for_trials = _open_for_trials(now)
    target = (
        select(Job.id)
        .where(open_for_trials)
        .order_by(Job.trials_running, Job.last_claimed_at.nulls_first(), Job.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = session.execute(
        update(Job)
        .where(Job.id == target, open_for_trials)
        .values(
            trials_running=Job.trials_running + 1,
            last_claimed_at=now,
            status=JobStatus.running,
            started_at=func.coalesce(Job.started_at, now),
        )
        .returning(*_CLAIM_COLUMNS)
    ).first()
    if row is None:
        return None
    timeout = (row.spec.get("search") or {}).get("timeout_s")
    if timeout:
        session.execute(
            update(Job)
            .where(Job.id == row.id, Job.deadline_at.is_(None))
            .values(deadline_at=now + timedelta(seconds=float(timeout)))
        )
    return _lease(session, row, ClaimKind.trial, worker_id, now, lease_seconds)


def _claim_finalize(
    session: Session, worker_id: str, now: datetime, lease_seconds: float
) -> Claim | None:
    ready = _ready_to_finalize(now)
    target = (
        select(Job.id)
        .where(ready)
        .order_by(Job.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = session.execute(
        update(Job)
        .where(Job.id == target, ready)
        .values(status=JobStatus.finalizing)
        .returning(*_CLAIM_COLUMNS)
    ).first()
    if row is None:
        return None
    return _lease(session, row, ClaimKind.finalize, worker_id, now, lease_seconds)


def has_open_work(session: Session) -> bool:
    """Return whether any job has a trial or a finalization waiting, without locking.

    With ``SKIP LOCKED`` a claim returns None both when there is no work and when
    another worker holds the row for a moment; this tells the two apart. It asks the
    same two conditions the claims do.
    """
    now = utcnow()
    found = session.scalar(
        select(Job.id).where(or_(_open_for_trials(now), _ready_to_finalize(now))).limit(1)
    )
    return found is not None


def claim_work(session: Session, worker_id: str, lease_seconds: float) -> Claim | None:
    """Claim the next unit of work for ``worker_id``, or return None if there is none.

    Trials come before finalizations, so a job's front is complete before any job is
    finalized. Commit the session right after, to publish the claim.
    """
    now = utcnow()
    return _claim_trial(session, worker_id, now, lease_seconds) or _claim_finalize(
        session, worker_id, now, lease_seconds
    )


def set_lease_trial(session: Session, lease_id: str, trial_number: int) -> None:
    """Record which Optuna trial a lease is evaluating (so a reaper can fail it)."""
    session.execute(update(Lease).where(Lease.id == lease_id).values(trial_number=trial_number))
