"""Which weights a job keeps: the best trial and the Pareto front, nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.store._blobs import BlobStore
from service.store._tables import Artifact, Blob

__all__ = ["drop_trial_artifacts_except", "get_artifact", "put_artifact"]


def put_artifact(
    session: Session,
    blobs: BlobStore,
    *,
    job_id: str,
    kind: str,
    trial_number: int,
    fmt: str,
    data: bytes,
) -> Artifact:
    """Store ``data`` as the job's artifact (replacing one with the same key)."""
    existing = get_artifact(session, job_id=job_id, kind=kind, trial_number=trial_number, fmt=fmt)
    if existing is not None:
        old_blob = existing.blob_id
        session.delete(existing)
        session.flush()
        session.execute(delete(Blob).where(Blob.id == old_blob))
    blob = blobs.put(session, data)
    artifact = Artifact(
        id=uuid.uuid4().hex,
        job_id=job_id,
        kind=kind,
        trial_number=trial_number,
        format=fmt,
        blob_id=blob.id,
    )
    session.add(artifact)
    session.flush()
    return artifact


def get_artifact(
    session: Session, *, job_id: str, kind: str, trial_number: int, fmt: str
) -> Artifact | None:
    """Return the artifact with that key, if stored."""
    return session.scalar(
        select(Artifact).where(
            Artifact.job_id == job_id,
            Artifact.kind == kind,
            Artifact.trial_number == trial_number,
            Artifact.format == fmt,
        )
    )


def drop_trial_artifacts_except(session: Session, job_id: str, keep: Iterable[int]) -> int:
    """Delete the job's trial weights (all formats) of trials not in ``keep``; return how
    many artifacts went."""
    keep_set = set(keep)
    doomed = session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "trial")
    ).all()
    count = 0
    for artifact in doomed:
        if artifact.trial_number in keep_set:
            continue
        blob_id = artifact.blob_id
        session.delete(artifact)
        session.flush()
        session.execute(delete(Blob).where(Blob.id == blob_id))
        count += 1
    return count
