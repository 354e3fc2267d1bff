"""Typed dependencies of the routes: settings, sessions, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
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


def get_state(request: Request) -> AppState:
    """Return the application's state."""
    state: AppState = request.app.state.inferprune
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """Yield a session for one request (read-only unless the route commits)."""
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


class Unauthorized(ServiceError):
    """Missing or unknown bearer token."""

    code = "unauthorized"
    status = 401


def get_tenant(
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
    with state.sessions() as session:
        tenant = authenticate(session, credentials.credentials)
    if tenant is None:
        raise Unauthorized("unknown or revoked token")
    state.tokens.put(digest, tenant)
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
