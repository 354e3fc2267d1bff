"""Target devices: the agents that run on them, as each tenant sees them.

There is no device table: a device is the name its agents give when they register,
within their tenant. Each agent renews ``last_seen_at`` whenever it asks for work, so a
device is live while one of its agents asked recently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.store._tables import AgentRow, Measurement, utcnow

__all__ = [
    "AgentNotFound",
    "DeviceInfo",
    "device_registered",
    "latest_device_spec",
    "list_devices",
    "live_agents",
    "register_agent",
    "stop_agent",
    "touch_agent",
]


class AgentNotFound(ServiceError):
    """An agent id the store does not know for this tenant (the agent registers again)."""

    code = "agent_not_found"
    status = 404


@dataclass(frozen=True)
class DeviceInfo:
    """A tenant's device as ``GET /v1/devices`` shows it.

    Attributes:
        name: the device name its agents registered under.
        spec: what the most recently seen agent reported (CPU, cores, OS, onnxruntime
            version and providers, threads).
        last_seen_at: when an agent of the device last asked for work (UTC).
        agents_live: agents seen within the live window.
        queued: measurement requests waiting for an agent.
        measuring: requests an agent holds now.
        measured: requests answered (each a cached result).
    """

    name: str
    spec: dict[str, Any]
    last_seen_at: datetime
    agents_live: int
    queued: int
    measuring: int
    measured: int


def register_agent(
    session: Session, tenant: str, device: str, spec: dict[str, Any], agent_id: str | None = None
) -> str:
    """Record an agent of ``device`` and return its id.

    An agent that registers again (after a network drop or a server restart) passes its
    id and keeps it, with the spec it reports now; an id this tenant does not own gets a
    new one.
    """
    now = utcnow()
    if agent_id is not None:
        row = session.get(AgentRow, agent_id)
        if row is not None and row.tenant == tenant:
            row.device, row.spec, row.last_seen_at, row.stopped_at = device, spec, now, None
            session.flush()
            return row.id
    row = AgentRow(
        id=uuid.uuid4().hex,
        tenant=tenant,
        device=device,
        spec=spec,
        started_at=now,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def touch_agent(session: Session, tenant: str, agent_id: str) -> AgentRow:
    """Mark the agent seen now and return it.

    Raises:
        AgentNotFound: no agent of this tenant has that id (it must register again).
    """
    row = session.get(AgentRow, agent_id)
    if row is None or row.tenant != tenant:
        raise AgentNotFound(f"agent {agent_id} is not registered; register again")
    row.last_seen_at, row.stopped_at = utcnow(), None
    session.flush()
    return row


def stop_agent(session: Session, tenant: str, agent_id: str) -> int:
    """Mark the agent stopped and hand its measurements in progress back to the queue;
    return how many it handed back."""
    row = session.get(AgentRow, agent_id)
    if row is None or row.tenant != tenant:
        return 0
    row.stopped_at = utcnow()
    handed_back = session.execute(
        update(Measurement)
        .where(Measurement.agent_id == agent_id, Measurement.status == "leased")
        .values(status="pending", agent_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.flush()
    return int(handed_back or 0)


def _live(now: datetime, live_seconds: float) -> Any:
    return and_(
        AgentRow.stopped_at.is_(None),
        AgentRow.last_seen_at >= now - timedelta(seconds=live_seconds),
    )


def live_agents(session: Session, tenant: str, device: str, live_seconds: float) -> int:
    """Return how many agents of the tenant's ``device`` asked for work within
    ``live_seconds``."""
    now = utcnow()
    count = session.scalar(
        select(func.count())
        .select_from(AgentRow)
        .where(AgentRow.tenant == tenant, AgentRow.device == device, _live(now, live_seconds))
    )
    return int(count or 0)


def device_registered(session: Session, tenant: str, device: str) -> bool:
    """Return whether an agent of the tenant ever registered ``device``."""
    found = session.scalar(
        select(AgentRow.id).where(AgentRow.tenant == tenant, AgentRow.device == device).limit(1)
    )
    return found is not None


def latest_device_spec(session: Session, tenant: str, device: str) -> dict[str, Any] | None:
    """Return the spec the device's most recently seen agent reported, or None."""
    return session.scalars(
        select(AgentRow.spec)
        .where(AgentRow.tenant == tenant, AgentRow.device == device)
        .order_by(AgentRow.last_seen_at.desc())
        .limit(1)
    ).first()


def list_devices(session: Session, tenant: str, live_seconds: float) -> list[DeviceInfo]:
    """Return the tenant's devices by name, each with its agents and its queue."""
    now = utcnow()
    agents = session.scalars(
        select(AgentRow).where(AgentRow.tenant == tenant).order_by(AgentRow.last_seen_at)
    ).all()
    queue = session.execute(
        select(Measurement.device, Measurement.status, func.count())
        .where(Measurement.tenant == tenant)
        .group_by(Measurement.device, Measurement.status)
    ).all()
    counts: dict[tuple[str, str], int] = {(d, s): int(n) for d, s, n in queue}
    latest: dict[str, AgentRow] = {}
    live: dict[str, int] = {}
    cutoff = now - timedelta(seconds=live_seconds)
    for agent in agents:  # oldest first: the last one seen wins
        latest[agent.device] = agent
        alive = agent.stopped_at is None and agent.last_seen_at >= cutoff
        live[agent.device] = live.get(agent.device, 0) + int(alive)
    return [
        DeviceInfo(
            name=name,
            spec=agent.spec,
            last_seen_at=agent.last_seen_at,
            agents_live=live[name],
            queued=counts.get((name, "pending"), 0),
            measuring=counts.get((name, "leased"), 0),
            measured=counts.get((name, "done"), 0),
        )
        for name, agent in sorted(latest.items())
    ]
