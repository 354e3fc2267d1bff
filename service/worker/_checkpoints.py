"""Candidates' rung checkpoints in the store, so that any worker can continue them."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from service.store import BlobStore, ClaimKind, get_artifact, put_artifact
from service.worker._retry import retry_database

__all__ = ["StoreCheckpoints"]

CHECKPOINT_FORMAT = "safetensors"


class StoreCheckpoints:
    """A :class:`search.CheckpointStore` over one job's trial artifacts.

    A rung's checkpoint is the trial's ``safetensors`` artifact, the one a finished
    job serves at ``GET /v1/jobs/{id}/checkpoint?trial=N``; each save replaces the last
    in one transaction, so a reader sees a whole checkpoint or the previous one.
    """

    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore, job_id: str) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.job_id = job_id

    def save(self, trial: int, data: bytes) -> None:
        """Keep ``data`` as ``trial``'s checkpoint."""

        def put() -> None:
            with self.sessions.begin() as session:
                put_artifact(
                    session,
                    self.blobs,
                    job_id=self.job_id,
                    kind=ClaimKind.trial,
                    trial_number=trial,
                    fmt=CHECKPOINT_FORMAT,
                    data=data,
                )

        retry_database(put, what="save a rung checkpoint")

    def load(self, trial: int) -> bytes | None:
        """Return ``trial``'s checkpoint, or None."""
        with self.sessions() as session:
            artifact = get_artifact(
                session,
                job_id=self.job_id,
                kind=ClaimKind.trial,
                trial_number=trial,
                fmt=CHECKPOINT_FORMAT,
            )
            return None if artifact is None else self.blobs.get(session, artifact.blob_id)
