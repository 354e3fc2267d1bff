"""Workers: announcing them, renewing their leases by heartbeat, stopping them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.store._tables import Lease, WorkerRow, utcnow

__all__ = ["heartbeat", "register_worker", "stop_worker"]


def register_worker(session: Session, worker_id: str, hostname: str, pid: int) -> None:
    """Announce a worker."""
    now = utcnow()
    session.merge(
        WorkerRow(
            id=worker_id,
            hostname=hostname,
            pid=pid,
            started_at=now,
            heartbeat_at=now,
            stopped_at=None,
        )
    )


def heartbeat(
    session: Session, worker_id: str, lease_seconds: float, lease_ids: Collection[str]
) -> int:
    """Renew the leases ``lease_ids`` the worker is working on, and its liveness; return
    how many leases were renewed.

    Only leases the worker still works on are renewed: one it gave up (its database
    connection failed mid-unit) must expire so that the reaper hands the unit back.
    """
    now = utcnow()
    session.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(heartbeat_at=now))
    if not lease_ids:
        return 0
    result = session.execute(
        update(Lease)
        .where(Lease.worker_id == worker_id, Lease.id.in_(list(lease_ids)))
        .values(expires_at=now + timedelta(seconds=lease_seconds))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def stop_worker(session: Session, worker_id: str) -> None:
    """Mark a worker as stopped (a clean shutdown)."""
    session.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(stopped_at=utcnow()))
