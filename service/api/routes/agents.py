"""``/v1/agent/*``: the protocol of ``inferprune agent``, and ``/v1/agent.py`` itself.

An agent registers its device, long-polls ``next`` for a measurement of that device,
fetches the request's models, renews its hold while it measures and posts the result.
Every route acts within the tenant of the agent's token and touches only that tenant's
devices and measurements; an agent token can call nothing else.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.api.deps import AgentTenantDep, StateDep
from service.api.device_schemas import (
    AgentId,
    AgentRegistered,
    AgentRegistration,
    MeasurementResult,
    MeasurementTask,
    NextRequest,
)
from service.api.schemas import ErrorBody
from service.api.state import AppState
from service.errors import ServiceError
from service.store import (
    Measurement,
    MeasurementClaim,
    claim_measurement,
    finish_measurement,
    measurement_payload,
    register_agent,
    renew_measurement,
    stop_agent,
    touch_agent,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["devices"])

_POLL_INTERVAL_S = 0.25
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown token."},
    404: {"model": ErrorBody, "description": "Unknown agent id: register again."},
}
_HELD: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "The agent no longer holds the measurement."},
}


class NotHeld(ServiceError):
    """The agent's lease on the measurement expired and another agent took it."""

    code = "not_held"
    status = 409


@cache
def _agent_source() -> bytes:
    spec = importlib.util.find_spec("service.agent")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).read_bytes()


@router.get(
    "/agent.py",
    summary="Download the device agent",
    response_class=Response,
    responses={200: {"content": {"text/x-python": {}}, "description": "The agent's source."}},
)
def download_agent() -> Response:
    """The self-contained agent for a device without inferprune: run it after
    ``pip install onnxruntime numpy httpx`` as ``python agent.py --server URL --token T
    --device NAME``. No token needed: it is the same file as ``inferprune agent``."""
    return Response(
        _agent_source(),
        media_type="text/x-python",
        headers={"Content-Disposition": 'attachment; filename="agent.py"'},
    )


@router.post(
    "/agent/register",
    summary="Register an agent of a device",
    response_model=AgentRegistered,
    responses=_ERRORS,
)
async def register(
    body: AgentRegistration, tenant: AgentTenantDep, state: StateDep
) -> AgentRegistered:
    """Record the agent (or refresh it: pass the id it had) and its device's spec."""

    def write() -> str:
        with state.sessions.begin() as session:
            return register_agent(session, tenant, body.device, body.spec, body.agent_id)

    agent_id = await run_in_threadpool(write)
    settings = state.settings
    return AgentRegistered(
        agent_id=agent_id,
        wait_s=settings.agent_wait_seconds,
        lease_s=settings.agent_lease_seconds,
    )


@router.post(
    "/agent/next",
    summary="Wait for a measurement of the agent's device",
    response_model=MeasurementTask,
    responses={**_ERRORS, 204: {"description": "Nothing to measure yet: ask again."}},
)
async def next_measurement(
    body: NextRequest, tenant: AgentTenantDep, state: StateDep, request: Request
) -> Any:
    """Hand the agent the oldest waiting measurement of its device, waiting up to
    ``wait_s`` (at most the server's ``agent_wait_seconds``) for one; 204 if none came.
    Each call also tells the server that the device is live."""
    settings = state.settings
    device = await run_in_threadpool(_touch, state, tenant, body.agent_id)
    deadline = time.monotonic() + min(body.wait_s, settings.agent_wait_seconds)
    while True:
        claim = await run_in_threadpool(_claim, state, tenant, device, body.agent_id)
        if claim is not None:
            return MeasurementTask(
                id=claim.id,
                models=claim.models,
                models_url=f"/v1/agent/measurements/{claim.id}/models",
                settings=claim.settings,
                lease_s=settings.agent_lease_seconds,
            )
        if time.monotonic() >= deadline or await request.is_disconnected():
            return Response(status_code=204)
        await asyncio.sleep(_POLL_INTERVAL_S)


def _touch(state: AppState, tenant: str, agent_id: str) -> str:
    with state.sessions.begin() as session:
        return touch_agent(session, tenant, agent_id).device


def _claim(state: AppState, tenant: str, device: str, agent_id: str) -> MeasurementClaim | None:
    settings = state.settings
    with state.sessions.begin() as session:
        return claim_measurement(
            session,
            tenant=tenant,
            device=device,
            agent_id=agent_id,
            lease_seconds=settings.agent_lease_seconds,
            max_attempts=settings.max_measurement_attempts,
        )


@router.get(
    "/agent/measurements/{measurement_id}/models",
    summary="The models of a held measurement",
    response_class=Response,
    responses={**_HELD, 200: {"content": {"application/zip": {}}, "description": "A zip."}},
)
def measurement_models(
    measurement_id: str,
    agent_id: Annotated[str, Query(max_length=32, description="The holding agent's id.")],
    tenant: AgentTenantDep,
    state: StateDep,
) -> Response:
    """A zip of the ONNX models to time (``000000.onnx``, ...), in order; only for the
    agent that holds the measurement."""
    with state.sessions() as session:
        payload = measurement_payload(
            session, state.blobs, tenant=tenant, measurement_id=measurement_id, agent_id=agent_id
        )
    if payload is None:
        raise NotHeld(f"this agent does not hold measurement {measurement_id}")
    return Response(payload, media_type="application/zip")


@router.post(
    "/agent/measurements/{measurement_id}/lease",
    summary="Keep holding a measurement",
    status_code=204,
    responses=_HELD,
)
def renew(measurement_id: str, body: AgentId, tenant: AgentTenantDep, state: StateDep) -> None:
    """Extend the agent's hold on the measurement by the lease (renew every third)."""
    with state.sessions.begin() as session:
        touch_agent(session, tenant, body.agent_id)
        held = renew_measurement(
            session,
            tenant=tenant,
            measurement_id=measurement_id,
            agent_id=body.agent_id,
            lease_seconds=state.settings.agent_lease_seconds,
        )
    if not held:
        raise NotHeld(f"measurement {measurement_id} went to another agent")


class InvalidResult(ServiceError):
    """An answer that is neither one latency per model nor an error."""

    code = "invalid_result"
    status = 422


@router.post(
    "/agent/measurements/{measurement_id}/result",
    summary="Answer a measurement",
    status_code=204,
    responses={**_HELD, 422: {"model": ErrorBody, "description": "Malformed answer."}},
)
def post_result(
    measurement_id: str, body: MeasurementResult, tenant: AgentTenantDep, state: StateDep
) -> None:
    """Record the latencies (one per model, in order) or the error; the worker waiting
    for them goes on."""
    if (body.latencies is None) == (body.error is None):
        raise InvalidResult("send either latencies (one per model) or error")
    result = None
    if body.latencies is not None:
        result = {"latencies": [t.model_dump() for t in body.latencies], "threads": body.threads}
    with state.sessions.begin() as session:
        touch_agent(session, tenant, body.agent_id)
        row = session.get(Measurement, measurement_id)
        expected = row.models if row is not None and row.tenant == tenant else None
        if expected is not None and result is not None and len(body.latencies or ()) != expected:
            raise InvalidResult(
                f"measurement {measurement_id} has {expected} models; "
                f"got {len(body.latencies or ())} latencies"
            )
        done = finish_measurement(
            session,
            tenant=tenant,
            measurement_id=measurement_id,
            agent_id=body.agent_id,
            result=result,
            error=body.error,
        )
    if not done:
        raise NotHeld(f"measurement {measurement_id} went to another agent")


@router.post("/agent/stop", summary="Stop an agent", status_code=204, responses=_ERRORS)
def stop(body: AgentId, tenant: AgentTenantDep, state: StateDep) -> None:
    """Mark the agent stopped; what it held goes back to its device's queue."""
    with state.sessions.begin() as session:
        stop_agent(session, tenant, body.agent_id)
