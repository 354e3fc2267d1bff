"""Typed dependencies of the routes: settings, sessions, the caller's tenant.

They are ``async`` on purpose: FastAPI runs every sync dependency in the thread pool, and
on a status poll those thread hops cost more than the database work. Whatever may block
(the token lookup, closing a session) is sent to the thread pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.api.state import AppState
from service.errors import ServiceError
from service.store import FULL_SCOPE, Credential, authenticate

__all__ = ["AgentTenantDep", "SessionDep", "StateDep", "TenantDep", "still_authenticated"]

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `inferprune token create --tenant NAME` (the embedded server "
    "prints one on first start and saves it for the CLI).",
)


async def get_state(request: Request) -> AppState:
    """Return the application's state."""
    state: AppState = request.app.state.inferprune
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """Yield a session for one request (read-only unless the route commits).

    Opening a session costs nothing (it connects on first use); closing it may talk to
    the database, so that happens in the thread pool.
    """
    session = state.sessions()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]


class Unauthorized(ServiceError):
    """Missing or unknown bearer token."""

    code = "unauthorized"
    status = 401


class AgentOnlyToken(ServiceError):
    """A device agent's token used for anything but the agent's own routes."""

    code = "forbidden"
    status = 403


async def _credential(
    state: AppState, credentials: HTTPAuthorizationCredentials | None
) -> Credential:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "send `Authorization: Bearer <token>`; create a token with "
            "`inferprune token create --tenant NAME`"
        )
    credential = await run_in_threadpool(_authenticate, state, credentials.credentials)
    if credential is None:
        raise Unauthorized("unknown or revoked token")
    return credential


async def get_tenant(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Return the tenant of the request's bearer token.

    Raises:
        Unauthorized: no token, or one that is unknown or revoked.
        AgentOnlyToken: a device agent's token (it reads nothing but its queue).
    """
    credential = await _credential(state, credentials)
    if credential.scope != FULL_SCOPE:
        raise AgentOnlyToken(
            "this token belongs to a device agent and can only run `inferprune agent`; "
            "use a token from `inferprune token create --tenant NAME`"
        )
    return credential.tenant


async def get_agent_tenant(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Return the tenant an agent acts for: that of its token (an agent token, or a full
    one).

    Raises:
        Unauthorized: no token, or one that is unknown or revoked.
    """
    return (await _credential(state, credentials)).tenant


async def still_authenticated(state: AppState, request: Request) -> bool:
    """Return whether the request's bearer token still authenticates.

    A long response (an event stream) asks as it goes, so that revoking a token ends
    its open streams too, not only its next requests.
    """
    credentials = await _bearer(request)
    if credentials is None:
        return False
    return await run_in_threadpool(_authenticate, state, credentials.credentials) is not None


def _authenticate(state: AppState, token: str) -> Credential | None:
    # Every request asks the database (no cache): a revoked token, or a deleted
    # tenant's, is refused from the next request on, by every API process. One cached
    # Core statement on a pooled connection: ~0.1 ms on SQLite, ~0.3 ms on PostgreSQL.
    with state.engine.connect() as connection:
        return authenticate(connection, token)


TenantDep = Annotated[str, Depends(get_tenant)]
AgentTenantDep = Annotated[str, Depends(get_agent_tenant)]
