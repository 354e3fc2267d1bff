"""The states the store records, one enum each: a job's status, a claim's kind, a
trial's outcome. Every query and every caller uses these, never bare strings."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "SEARCHING_STATUSES",
    "ClaimKind",
    "JobStatus",
    "TrialOutcome",
]


class JobStatus(StrEnum):
    """Where a job is in its life: queued → running → finalizing → succeeded, or failed /
    cancelled from any active status."""

    queued = "queued"
    running = "running"
    finalizing = "finalizing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in FINISHED_STATUSES


ACTIVE_STATUSES = (JobStatus.queued, JobStatus.running, JobStatus.finalizing)
FINISHED_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
SEARCHING_STATUSES = (JobStatus.queued, JobStatus.running)
"""A job in these still evaluates trials."""


class ClaimKind(StrEnum):
    """What a lease is for: one trial of a job, or the job's finalization."""

    trial = "trial"
    finalize = "finalize"


class TrialOutcome(StrEnum):
    """How a claimed trial ended, as its lease is released.

    ``complete`` and ``pruned`` count as finished trials; ``fail`` as a failed attempt;
    ``abandoned`` (a worker stopped mid-trial and handed it back) as neither.
    """

    complete = "complete"
    pruned = "pruned"
    fail = "fail"
    abandoned = "abandoned"

    @property
    def is_finished(self) -> bool:
        """True for the outcomes that count towards the job's trials."""
        return self in (TrialOutcome.complete, TrialOutcome.pruned)
