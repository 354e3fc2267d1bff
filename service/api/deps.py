"""Typed dependencies of the routes: settings, sessions, the caller's tenant.

They are ``async`` on purpose: FastAPI runs every sync dependency in the thread pool, and
on a status poll those thread hops cost more than the database work. Whatever may block
(a token lookup that misses the cache, closing a session) is sent to the thread pool.
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
from service.store import authenticate, hash_token

__all__ = ["SessionDep", "StateDep", "TenantDep"]

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


async def get_tenant(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Return the tenant of the request's bearer token.

    Raises:
        Unauthorized: no token, or one that is unknown or revoked.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "send `Authorization: Bearer <token>`; create a token with "
            "`inferprune token create --tenant NAME`"
        )
    digest = hash_token(credentials.credentials)
    tenant = state.tokens.get(digest)
    if tenant is not None:
        return tenant
    tenant = await run_in_threadpool(_authenticate, state, credentials.credentials)
    if tenant is None:
        raise Unauthorized("unknown or revoked token")
    state.tokens.put(digest, tenant)
    return tenant


def _authenticate(state: AppState, token: str) -> str | None:
    with state.sessions() as session:
        return authenticate(session, token)


TenantDep = Annotated[str, Depends(get_tenant)]
