"""Finishing work: releasing leases with their outcome, recording results, reaping the dead.

A worker ends each unit by taking its lease back; a lease whose worker stopped renewing
it is taken by the reaper instead, and whichever comes first wins. Trial outcomes count
towards the job's totals, and too many failed attempts fail the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service.store._states import (
    ACTIVE_STATUSES,
    SEARCHING_STATUSES,
    ClaimKind,
    JobStatus,
    TrialOutcome,
)
from service.store._tables import Job, Lease, TrialLog, utcnow

REAPED_ERROR = "worker lost: its lease expired"
"""The error of a trial whose worker stopped renewing its lease mid-trial."""

REAPED_AFTER_RESULT = "worker lost after its result was recorded (the result stands)"
"""The note on a reaped trial whose result the study had already been told."""

TellLookup = Callable[[str, int], "tuple[TrialOutcome, int] | None"]
"""``(study name, trial number) → (outcome, queued)`` when the study already holds that
trial's result (``queued``: how many trials the study holds queued), else None."""

__all__ = [
    "REAPED_AFTER_RESULT",
    "REAPED_ERROR",
    "ReapedLease",
    "TellLookup",
    "fail_job",
    "finish_finalize",
    "finish_trial",
    "hand_back_finalize",
    "reap_expired",
    "release_finalize",
    "set_best_so_far",
]


@dataclass(frozen=True)
class ReapedLease:
    """A lease whose worker stopped renewing it. ``result_recorded``: its trial's result
    was in the study already (the worker died after telling it), so the trial counted as
    finished and is not to be run again."""

    job_id: str
    kind: ClaimKind
    trial_number: int | None
    study_name: str
    worker_id: str
    result_recorded: bool = False


def _take_lease(session: Session, lease_id: str) -> Lease | None:
    """Delete the lease and return it, unless a reaper took it first."""
    lease = session.get(Lease, lease_id)
    if lease is None:
        return None
    deleted = session.execute(delete(Lease).where(Lease.id == lease_id)).rowcount  # type: ignore[attr-defined]
    return lease if deleted else None


def finish_trial(
    session: Session,
    lease_id: str,
    *,
    state: TrialOutcome,
    seconds: float,
    trial_number: int | None,
    worker_id: str,
    error: str | None = None,
    max_failed_trials: int,
    more_trials: int = 0,
) -> bool:
    """Release a trial lease and count the trial as ``state`` (see :class:`TrialOutcome`).

    The last trial of a cancelled job marks it cancelled; too many failures fail it.
    ``more_trials`` adds to the job's trial total: continuations of paused candidates
    that this trial's result queued (a rung search, ``compute_epochs``).

    Returns:
        False if the lease had already been reaped (the worker was presumed dead).
    """
    lease = _take_lease(session, lease_id)
    if lease is None:
        return False
    now = utcnow()
    done = TrialOutcome(state).is_finished
    failed = state == TrialOutcome.fail
    session.execute(
        update(Job)
        .where(Job.id == lease.job_id)
        .values(
            trials_running=Job.trials_running - 1,
            trials_finished=Job.trials_finished + (1 if done else 0),
            trials_failed=Job.trials_failed + (1 if failed else 0),
            trials_total=Job.trials_total + more_trials,
        )
    )
    session.add(
        TrialLog(
            job_id=lease.job_id,
            trial_number=trial_number,
            state=state,
            seconds=seconds,
            worker_id=worker_id,
            error=error,
            finished_at=now,
        )
    )
    _settle(session, lease.job_id, max_failed_trials, error)
    return True


def _settle(session: Session, job_id: str, max_failed_trials: int, error: str | None) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(True),
            Job.trials_running == 0,
            Job.status == JobStatus.running,
        )
        .values(status=JobStatus.cancelled, finished_at=now)
    )
    session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.trials_failed >= max_failed_trials,
            Job.status.in_(SEARCHING_STATUSES),
        )
        .values(
            status=JobStatus.failed,
            finished_at=now,
            error_code="too_many_failures",
            error_message=f"{max_failed_trials} trial attempts failed; the last: "
            f"{error or 'unknown error'}",
        )
    )


def set_best_so_far(
    session: Session,
    job_id: str,
    best: dict[str, Any] | None,
    baseline: dict[str, Any] | None = None,
) -> None:
    """Record the best trial found so far on a job still searching (shown while it runs),
    and the unpruned model's search-time measurements (MACs, parameters, validation
    accuracy) so that progress can say what share of them the best keeps. Finalization
    replaces both with the final measurements."""
    values: dict[str, Any] = {"best": best}
    if baseline is not None:
        values["baseline"] = baseline
    session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(SEARCHING_STATUSES)).values(**values)
    )


def finish_finalize(
    session: Session,
    lease_id: str,
    *,
    baseline: dict[str, Any],
    best: dict[str, Any],
    report: dict[str, Any],
) -> bool:
    """Release a finalize lease and mark the job succeeded with its results.

    Returns:
        False if the lease had been reaped meanwhile (another worker may redo it).
    """
    lease = _take_lease(session, lease_id)
    if lease is None:
        return False
    session.execute(
        update(Job)
        .where(Job.id == lease.job_id, Job.status == JobStatus.finalizing)
        .values(
            status=JobStatus.succeeded,
            finished_at=utcnow(),
            baseline=baseline,
            best=best,
            report=report,
        )
    )
    return True


def release_finalize(
    session: Session,
    lease_id: str,
    *,
    status: JobStatus,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Release a finalize lease ending the job as ``status`` (failed or cancelled)."""
    lease = _take_lease(session, lease_id)
    if lease is None:
        return
    session.execute(
        update(Job)
        .where(Job.id == lease.job_id)
        .values(
            status=status, finished_at=utcnow(), error_code=error_code, error_message=error_message
        )
    )


def hand_back_finalize(session: Session, lease_id: str) -> bool:
    """Release a finalize lease without an outcome: the job goes back to be finalized by
    the next worker that claims it (a worker that was told to stop mid-way).

    Returns:
        False if the lease had been reaped meanwhile (which hands it back too).
    """
    lease = _take_lease(session, lease_id)
    if lease is None:
        return False
    _reopen_finalize(session, lease.job_id)
    return True


def _reopen_finalize(session: Session, job_id: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.finalizing)
        .values(status=JobStatus.running)
    )


def fail_job(session: Session, job_id: str, code: str, message: str) -> None:
    """Mark a job failed (for errors no retry can fix, such as unreadable uploads)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_STATUSES))
        .values(
            status=JobStatus.failed, finished_at=utcnow(), error_code=code, error_message=message
        )
    )


def reap_expired(
    session: Session, *, max_failed_trials: int, told: TellLookup | None = None
) -> list[ReapedLease]:
    """Take every expired lease: its trial counts as a failed attempt (the job goes on),
    an expired finalization goes back to be claimed again.

    ``told`` says which lost trials the study already holds a result for: their worker
    died after the tell (while storing the trial's weights, or releasing the lease). Such
    a trial counts as the finished trial it was, never as a failure (it cannot push the
    job over its failure cap), and the job's total is raised to cover the trials the
    study holds queued: continuations of paused candidates the lost worker may have
    queued but not lived to count.
    """
    now = utcnow()
    expired = session.execute(
        select(
            Lease.id, Lease.job_id, Lease.kind, Lease.trial_number, Lease.worker_id, Job.study_name
        )
        .join(Job, Job.id == Lease.job_id)
        .where(Lease.expires_at < now)
    ).all()
    reaped = []
    for row in expired:
        lost_trial = row.kind == ClaimKind.trial
        result = (
            told(row.study_name, row.trial_number)
            if lost_trial and told is not None and row.trial_number is not None
            else None
        )
        if not session.execute(delete(Lease).where(Lease.id == row.id)).rowcount:  # type: ignore[attr-defined]
            continue  # another reaper or the worker itself got there first
        if lost_trial and result is not None:
            _count_told(session, row.job_id, row.trial_number, row.worker_id, *result)
        elif lost_trial:
            session.execute(
                update(Job)
                .where(Job.id == row.job_id)
                .values(trials_running=Job.trials_running - 1, trials_failed=Job.trials_failed + 1)
            )
            session.add(
                TrialLog(
                    job_id=row.job_id,
                    trial_number=row.trial_number,
                    state=TrialOutcome.fail,
                    seconds=0.0,
                    worker_id=row.worker_id,
                    finished_at=now,
                    error=REAPED_ERROR,
                )
            )
            _settle(session, row.job_id, max_failed_trials, REAPED_ERROR)
        else:
            _reopen_finalize(session, row.job_id)
        reaped.append(
            ReapedLease(
                row.job_id,
                ClaimKind(row.kind),
                row.trial_number,
                row.study_name,
                row.worker_id,
                result_recorded=result is not None,
            )
        )
    return reaped


def _count_told(
    session: Session,
    job_id: str,
    trial_number: int,
    worker_id: str,
    state: TrialOutcome,
    queued: int,
) -> None:
    """Count a lost trial whose result the study holds as ``state``, and make the job's
    total cover the ``queued`` trials."""
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one()
    job.trials_running -= 1
    job.trials_finished += 1 if state.is_finished else 0
    job.trials_total = max(job.trials_total, job.trials_finished + job.trials_running + queued)
    session.add(
        TrialLog(
            job_id=job_id,
            trial_number=trial_number,
            state=state,
            seconds=0.0,
            worker_id=worker_id,
            finished_at=utcnow(),
            error=REAPED_AFTER_RESULT,
        )
    )
