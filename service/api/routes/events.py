"""``/v1/jobs/{id}/events``: progress as server-sent events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import StateDep, TenantDep, still_authenticated
from service.api.schemas import ErrorBody, JobStatus
from service.api.state import AppState
from service.api.views import job_public
from service.store import get_job, recent_trials

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"])

POLL_S = 0.5
KEEPALIVE_S = 15.0


def _frame(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _snapshot(state: AppState, tenant: str, job_id: str, after: int) -> tuple[Any, list[Any]]:
    with state.sessions() as session:
        job = get_job(session, tenant, job_id)
        public = job_public(session, job).model_dump(mode="json")
        entries = [
            {
                "id": e.id,
                "number": e.trial_number,
                "state": e.state,
                "seconds": round(e.seconds, 3),
                "error": e.error,
                "finished_at": e.finished_at.isoformat() + "Z",
            }
            for e in recent_trials(session, job_id, after)
        ]
        return public, entries


@router.get(
    "/jobs/{job_id}/events",
    summary="Stream a job's progress",
    operation_id="stream_events",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events `status` (the job, on every change), `trial` "
            "(a trial attempt finished: number, state, seconds, error) and `done` "
            "(the job, once finished; then the stream ends). Comment lines keep "
            "the connection alive.",
        },
        401: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
    response_class=StreamingResponse,
)
async def events(
    job_id: str, request: Request, state: StateDep, tenant: TenantDep
) -> StreamingResponse:
    """Server-sent events until the job finishes or the client goes away."""
    first, _ = await run_in_threadpool(_snapshot, state, tenant, job_id, 0)  # 404s early

    async def stream() -> AsyncIterator[str]:
        last_key: Any = None
        after = 0
        quiet_since = time.monotonic()
        job = first
        while True:
            job, entries = await run_in_threadpool(_snapshot, state, tenant, job_id, after)
            for entry in entries:
                after = entry.pop("id")
                yield _frame("trial", entry)
            key = (
                job["status"],
                job["progress"]["trials_done"],
                job["progress"]["trials_running"],
                job["cancel_requested"],
            )
            if key != last_key:
                last_key = key
                quiet_since = time.monotonic()
                yield _frame("status", job)
            if JobStatus(job["status"]).is_finished:
                yield _frame("done", job)
                return
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await anyio.sleep(POLL_S)
            if not await still_authenticated(state, request):
                return  # the token was revoked (or its tenant deleted) meanwhile

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
