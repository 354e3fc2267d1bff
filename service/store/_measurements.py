"""The measurement queue: workers ask for ONNX models to be timed on a device, agents of
that device claim the requests, renew their lease while they measure, and answer.

A request is leased like a trial: an agent that stops renewing (killed, unplugged) loses
it to the next agent of the same device that asks, up to ``max_attempts`` times. The
row stays as the cached result of its key (the models and the latency settings), so
the same model measured again on the same device costs nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.store._blobs import BlobStore
from service.store._tables import Measurement, utcnow

__all__ = [
    "MeasurementClaim",
    "MeasurementState",
    "MeasurementStatus",
    "claim_measurement",
    "finish_measurement",
    "measurement_payload",
    "measurement_state",
    "renew_measurement",
    "request_measurement",
]


class MeasurementStatus(StrEnum):
    """Where a measurement request is."""

    pending = "pending"
    leased = "leased"
    done = "done"
    failed = "failed"


@dataclass(frozen=True)
class MeasurementState:
    """A request as the worker waiting for it sees it."""

    id: str
    status: MeasurementStatus
    result: dict[str, Any] | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class MeasurementClaim:
    """A request an agent now holds: what to measure and how."""

    id: str
    settings: dict[str, Any]
    models: int
    lease_expires_at: datetime


def request_measurement(
    session: Session,
    blobs: BlobStore,
    *,
    tenant: str,
    device: str,
    key: str,
    settings: dict[str, Any],
    payload: bytes,
    models: int,
    job_id: str | None = None,
) -> MeasurementState:
    """Queue ``payload`` (a zip of ONNX models) for the tenant's ``device``, unless the
    same key is queued or answered already; return the request's state.

    A failed request of the same key is queued again (its agents may be back).
    """
    state = _by_key(session, tenant, device, key)
    if state is not None and state.status != MeasurementStatus.failed:
        return state
    if state is not None:
        session.execute(
            update(Measurement)
            .where(Measurement.id == state.id)
            .values(
                status=MeasurementStatus.pending,
                attempts=0,
                error=None,
                agent_id=None,
                lease_expires_at=None,
                job_id=job_id,
            )
        )
        return MeasurementState(state.id, MeasurementStatus.pending, None, None, 0)
    blob = blobs.put(session, payload)
    row = Measurement(
        id=uuid.uuid4().hex,
        tenant=tenant,
        device=device,
        key=key,
        settings=settings,
        models=models,
        blob_id=blob.id,
        job_id=job_id,
        status=MeasurementStatus.pending,
        attempts=0,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another worker queued the same key a moment ago
        raced = _by_key(session, tenant, device, key)
        assert raced is not None
        return raced
    return MeasurementState(row.id, MeasurementStatus.pending, None, None, 0)


def _by_key(session: Session, tenant: str, device: str, key: str) -> MeasurementState | None:
    row = session.scalars(
        select(Measurement).where(
            Measurement.tenant == tenant, Measurement.device == device, Measurement.key == key
        )
    ).first()
    return _state(row) if row is not None else None


def _state(row: Measurement) -> MeasurementState:
    return MeasurementState(
        row.id, MeasurementStatus(row.status), row.result, row.error, row.attempts
    )


def measurement_state(session: Session, measurement_id: str) -> MeasurementState | None:
    """Return the request's state, or None if it is gone."""
    row = session.get(Measurement, measurement_id, populate_existing=True)
    return _state(row) if row is not None else None


def claim_measurement(
    session: Session,
    *,
    tenant: str,
    device: str,
    agent_id: str,
    lease_seconds: float,
    max_attempts: int,
) -> MeasurementClaim | None:
    """Hand the oldest waiting request of the tenant's ``device`` to ``agent_id``.

    Waiting means pending, or leased by an agent that stopped renewing; a request whose
    agents vanished ``max_attempts`` times fails instead (the worker waiting for it
    reports the error). One ``UPDATE … RETURNING`` on a row picked with ``SKIP LOCKED``:
    agents never wait on each other. Commit right after.
    """
    now = utcnow()
    mine = and_(Measurement.tenant == tenant, Measurement.device == device)
    expired = and_(
        Measurement.status == MeasurementStatus.leased, Measurement.lease_expires_at < now
    )
    session.execute(
        update(Measurement)
        .where(mine, expired, Measurement.attempts >= max_attempts)
        .values(
            status=MeasurementStatus.failed,
            finished_at=now,
            error=f"the device's agents stopped answering {max_attempts} times while "
            "measuring this model",
        )
        .execution_options(synchronize_session=False)
    )
    waiting = and_(mine, or_(Measurement.status == MeasurementStatus.pending, expired))
    target = (
        select(Measurement.id)
        .where(waiting)
        .order_by(Measurement.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    expires = now + timedelta(seconds=lease_seconds)
    row = session.execute(
        update(Measurement)
        .where(Measurement.id == target, waiting)
        .values(
            status=MeasurementStatus.leased,
            agent_id=agent_id,
            attempts=Measurement.attempts + 1,
            lease_expires_at=expires,
        )
        .returning(Measurement.id, Measurement.settings, Measurement.models)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    return MeasurementClaim(row.id, row.settings, row.models, expires)


def _held_by(measurement_id: str, tenant: str, agent_id: str) -> Any:
    return and_(
        Measurement.id == measurement_id,
        Measurement.tenant == tenant,
        Measurement.agent_id == agent_id,
        Measurement.status == MeasurementStatus.leased,
    )


def renew_measurement(
    session: Session, *, tenant: str, measurement_id: str, agent_id: str, lease_seconds: float
) -> bool:
    """Extend the agent's lease on the request; False if it no longer holds it."""
    renewed = session.execute(
        update(Measurement)
        .where(_held_by(measurement_id, tenant, agent_id))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(renewed)


def measurement_payload(
    session: Session, blobs: BlobStore, *, tenant: str, measurement_id: str, agent_id: str
) -> bytes | None:
    """Return the models of a request the agent holds, or None if it does not hold it."""
    blob_id = session.scalar(
        select(Measurement.blob_id).where(_held_by(measurement_id, tenant, agent_id))
    )
    return blobs.get(session, blob_id) if blob_id is not None else None


def finish_measurement(
    session: Session,
    *,
    tenant: str,
    measurement_id: str,
    agent_id: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the agent's answer: ``result`` (done) or ``error`` (failed: the models
    could not be run there). False if the agent no longer holds the request (its lease
    expired and another agent took it); the answer is then dropped."""
    finished = session.execute(
        update(Measurement)
        .where(_held_by(measurement_id, tenant, agent_id))
        .values(
            status=MeasurementStatus.done if error is None else MeasurementStatus.failed,
            result=result,
            error=error,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(finished)
