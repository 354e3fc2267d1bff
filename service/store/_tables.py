"""The service's own tables. All are prefixed ``inferprune_`` so they never clash with
Optuna's tables, which live in the same database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AgentRow",
    "Artifact",
    "Base",
    "Blob",
    "BlobChunk",
    "Job",
    "Lease",
    "Measurement",
    "SensitivityScan",
    "Token",
    "TrialLog",
    "WorkerRow",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (how every timestamp is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the inferprune tables."""

    type_annotation_map = {dict[str, Any]: JSON}


class Token(Base):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "inferprune_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), default="full", server_default="full")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Blob(Base):
    """Bytes of an upload or an artifact, in the database or under the artifact root."""

    __tablename__ = "inferprune_blobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BlobChunk(Base):
    """One piece (at most a MiB) of a blob stored in the database: a blob is written and
    read a chunk at a time, so no process ever holds a whole upload in memory."""

    __tablename__ = "inferprune_blob_chunks"

    blob_id: Mapped[str] = mapped_column(
        ForeignKey("inferprune_blobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Job(Base):
    """A pruning job and its progress counters (the unit tenants see)."""

    __tablename__ = "inferprune_jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_inferprune_jobs_idempotency"),
        Index("ix_inferprune_jobs_tenant_created", "tenant", "created_at"),
        Index("ix_inferprune_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    study_name: Mapped[str] = mapped_column(String(128))
    weights_blob_id: Mapped[str | None] = mapped_column(
        ForeignKey("inferprune_blobs.id"), nullable=True
    )
    dataset_blob_id: Mapped[str | None] = mapped_column(
        ForeignKey("inferprune_blobs.id"), nullable=True
    )
    dataset_filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    trials_total: Mapped[int] = mapped_column(Integer)
    trials_finished: Mapped[int] = mapped_column(Integer, default=0)
    trials_running: Mapped[int] = mapped_column(Integer, default=0)
    trials_failed: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    best: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_claimed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Lease(Base):
    """A unit of work a worker holds: one trial of a job, or the job's finalization.

    The lease is the heartbeat: a worker renews ``expires_at``; a lease past it belongs
    to a dead worker and is reaped.
    """

    __tablename__ = "inferprune_leases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("inferprune_jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[str] = mapped_column(String(64), index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acquired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class TrialLog(Base):
    """One finished trial attempt, as workers report it (for progress, events, metrics)."""

    __tablename__ = "inferprune_trial_log"
    __table_args__ = (Index("ix_inferprune_trial_log_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("inferprune_jobs.id", ondelete="CASCADE"))
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    seconds: Mapped[float] = mapped_column(default=0.0)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Artifact(Base):
    """A file a job produced: a trial's or the final model's weights in some format,
    the Pareto plot. Trial weights are kept only for the best trial and the front."""

    __tablename__ = "inferprune_artifacts"
    __table_args__ = (
        UniqueConstraint(
            "job_id", "kind", "trial_number", "format", name="uq_inferprune_artifacts"
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("inferprune_jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    trial_number: Mapped[int] = mapped_column(Integer, default=-1)
    format: Mapped[str] = mapped_column(String(16))
    blob_id: Mapped[str] = mapped_column(ForeignKey("inferprune_blobs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerRow(Base):
    """A worker process that has announced itself; ``heartbeat_at`` says it is alive."""

    __tablename__ = "inferprune_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SensitivityScan(Base):
    """A per-group sensitivity scan of one model (``search.Sensitivity.to_dict()``), kept
    so that the next job on the same weights, data and pruning settings skips the scan."""

    __tablename__ = "inferprune_sensitivity"
    __table_args__ = (
        UniqueConstraint(
            "weights_sha256",
            "arch",
            "num_classes",
            "input_shape",
            "dataset",
            "criterion",
            "round_to",
            "seed",
            "fractions",
            name="uq_inferprune_sensitivity_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    arch: Mapped[str] = mapped_column(String(128))
    num_classes: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(255))
    criterion: Mapped[str] = mapped_column(String(32))
    round_to: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    fractions: Mapped[str] = mapped_column(String(128))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AgentRow(Base):
    """An ``inferprune agent`` process on a target device. Agents of one tenant that give
    the same device name are that device: they share its measurement queue."""

    __tablename__ = "inferprune_agents"
    __table_args__ = (Index("ix_inferprune_agents_device", "tenant", "device"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    device: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Measurement(Base):
    """A request to time ONNX models on a tenant's device, and once done its result.

    The row is also the cache: one per (tenant, device, key), the key hashing the models
    and the latency settings. An agent claims a pending row (or one whose lease expired:
    its agent vanished) and renews the lease while it measures.
    """

    __tablename__ = "inferprune_measurements"
    __table_args__ = (
        UniqueConstraint("tenant", "device", "key", name="uq_inferprune_measurements_key"),
        Index("ix_inferprune_measurements_queue", "tenant", "device", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    device: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    models: Mapped[int] = mapped_column(Integer)
    blob_id: Mapped[str] = mapped_column(ForeignKey("inferprune_blobs.id"))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    agent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
