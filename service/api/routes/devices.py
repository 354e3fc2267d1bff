"""``/v1/devices``: the tenant's target devices (registered by their agents)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import SessionDep, StateDep, TenantDep
from service.api.device_schemas import DeviceList, DevicePublic
from service.api.schemas import ErrorBody
from service.store import list_devices

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["devices"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown token."},
    403: {"model": ErrorBody, "description": "A device agent's token."},
}


@router.get(
    "/devices",
    summary="List the tenant's target devices",
    response_model=DeviceList,
    responses=_ERRORS,
)
def get_devices(tenant: TenantDep, session: SessionDep, state: StateDep) -> DeviceList:
    """Every device an agent of this tenant registered: its spec, when an agent last
    asked for work, whether one is live, and its measurement queue. A job measures on
    one with `latency.target` (CLI `--latency-target NAME`)."""
    live_s = state.settings.agent_live_seconds
    return DeviceList(
        items=[
            DevicePublic(
                name=d.name,
                spec=d.spec,
                last_seen_at=d.last_seen_at,
                live=d.agents_live > 0,
                agents_live=d.agents_live,
                queued=d.queued,
                measuring=d.measuring,
                measured=d.measured,
            )
            for d in list_devices(session, tenant, live_s)
        ]
    )
