"""API tokens: created once, shown once, stored as SHA-256, checked on every request.

There is no tenant table: a tenant exists while it has a token that is not revoked.
Revoking every token of a tenant deletes it: nothing authenticates as it, and no job
can be created for it any more (:func:`require_tenant`, called by ``create_job``).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.store._tables import Token, utcnow

__all__ = [
    "AGENT_SCOPE",
    "FULL_SCOPE",
    "TOKEN_ID_LENGTH",
    "TOKEN_PREFIX",
    "TenantNotFound",
    "TokenInfo",
    "TokenNotFound",
    "Credential",
    "authenticate",
    "create_token",
    "hash_token",
    "list_tokens",
    "require_tenant",
    "revoke_tenant",
    "revoke_token",
]

TOKEN_PREFIX = "ipt_"
FULL_SCOPE = "full"
"""A token that may do everything its tenant may."""
AGENT_SCOPE = "agent"
"""A token for ``inferprune agent`` on a target device: it may register devices of its
tenant and measure their queue, and read nothing else (no jobs, no models but the ones
sent to it)."""
SCOPES = (FULL_SCOPE, AGENT_SCOPE)
TOKEN_ID_LENGTH = 12
"""How many characters of a token's row id ``token list`` shows and ``revoke`` needs at
least (the id is random, not derived from the secret)."""


class TokenNotFound(ServiceError):
    """No token matches (or an id prefix matches several)."""

    code = "not_found"
    status = 404


class TenantNotFound(ServiceError):
    """The tenant has no token that is not revoked: it does not exist (any more)."""

    code = "unauthorized"
    status = 401


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never the token nor its hash."""

    id: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None
    scope: str = FULL_SCOPE

    @property
    def revoked(self) -> bool:
        """Whether the token no longer authenticates."""
        return self.revoked_at is not None


def hash_token(token: str) -> str:
    """Return the stored form of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, tenant: str, scope: str = FULL_SCOPE) -> str:
    """Create a token for ``tenant`` and return it; only its hash is kept.

    Args:
        session: the store.
        tenant: the tenant's name.
        scope: :data:`FULL_SCOPE`, or :data:`AGENT_SCOPE` for a device agent's token.

    Raises:
        ValueError: empty or over-long tenant name, unknown scope.
    """
    tenant = tenant.strip()
    if not tenant or len(tenant) > 128:
        raise ValueError("a tenant name is 1 to 128 characters")
    if scope not in SCOPES:
        raise ValueError(f"a token's scope is one of {', '.join(SCOPES)}, not {scope!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        Token(id=uuid.uuid4().hex, tenant=tenant, token_hash=hash_token(token), scope=scope)
    )
    session.flush()
    return token


@dataclass(frozen=True)
class Credential:
    """Who a live token speaks for, and what it may do (:data:`SCOPES`)."""

    tenant: str
    scope: str


_AUTHENTICATE = select(Token.tenant, Token.scope).where(
    Token.token_hash == bindparam("token_hash"), Token.revoked_at.is_(None)
)


def authenticate(connection: Connection | Session, token: str) -> Credential | None:
    """Return the tenant and scope of ``token``, or None if it is unknown or revoked.

    One indexed lookup through a cached statement: the API runs it on every request, so
    a revocation holds from the next request on, in every process.
    """
    row = connection.execute(_AUTHENTICATE, {"token_hash": hash_token(token)}).first()
    return Credential(str(row.tenant), str(row.scope)) if row is not None else None


def require_tenant(session: Session, tenant: str) -> None:
    """Check that ``tenant`` exists and keep it existing until the transaction ends.

    The tenant's live tokens are updated in place (to themselves), which takes their
    row locks (the write lock on SQLite): a concurrent :func:`revoke_tenant` waits for
    this transaction, and one that committed first leaves no live token to find.

    Raises:
        TenantNotFound: every token of the tenant is revoked, or it never had one.
    """
    touched = session.execute(
        update(Token)
        .where(Token.tenant == tenant, Token.revoked_at.is_(None))
        .values(tenant=Token.tenant)
        .execution_options(synchronize_session=False)
    )
    if not touched.rowcount:  # type: ignore[attr-defined]
        raise TenantNotFound(
            f"tenant {tenant!r} no longer exists (its tokens are revoked); "
            "create a token with `inferprune token create --tenant NAME`"
        )


def list_tokens(session: Session, tenant: str | None = None) -> list[TokenInfo]:
    """Return the tokens (of ``tenant``, or all), oldest first, without their secrets."""
    query = select(Token).order_by(Token.created_at, Token.id)
    if tenant is not None:
        query = query.where(Token.tenant == tenant)
    return [
        TokenInfo(
            id=row.id[:TOKEN_ID_LENGTH],
            tenant=row.tenant,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            scope=row.scope,
        )
        for row in session.scalars(query)
    ]


def revoke_token(session: Session, token_or_id: str) -> TokenInfo:
    """Revoke one token, named by the token itself or by (a prefix of) its listed id.

    Revoking a revoked token changes nothing and is not an error.

    Raises:
        TokenNotFound: no token matches, an id prefix is shorter than
            :data:`TOKEN_ID_LENGTH` or matches several tokens.
    """
    if token_or_id.startswith(TOKEN_PREFIX):
        match = Token.token_hash == hash_token(token_or_id)
    elif len(token_or_id) >= TOKEN_ID_LENGTH:
        match = Token.id.startswith(token_or_id.lower(), autoescape=True)
    else:
        raise TokenNotFound(
            f"give the token ({TOKEN_PREFIX}…) or the {TOKEN_ID_LENGTH}-character id "
            "that `inferprune token list` shows"
        )
    rows = session.scalars(select(Token).where(match).limit(2)).all()
    if len(rows) != 1:
        raise TokenNotFound(
            f"{'several tokens match' if rows else 'no token matches'} {_shown(token_or_id)}; "
            "see `inferprune token list`"
        )
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return TokenInfo(
        row.id[:TOKEN_ID_LENGTH], row.tenant, row.created_at, row.revoked_at, row.scope
    )


def revoke_tenant(session: Session, tenant: str) -> list[TokenInfo]:
    """Revoke every live token of ``tenant`` (this deletes the tenant); return them.

    Raises:
        TenantNotFound: the tenant has no live token.
    """
    now = utcnow()
    revoked = session.execute(
        update(Token)
        .where(Token.tenant == tenant, Token.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(Token.id, Token.created_at, Token.scope)
        .execution_options(synchronize_session=False)
    ).all()
    if not revoked:
        raise TenantNotFound(
            f"tenant {tenant!r} has no live token (deleted already, or never created); "
            "see `inferprune token list`"
        )
    return [
        TokenInfo(row.id[:TOKEN_ID_LENGTH], tenant, row.created_at, now, row.scope)
        for row in revoked
    ]


def _shown(token_or_id: str) -> str:
    """Return ``token_or_id`` fit for an error message (a secret is never echoed)."""
    if token_or_id.startswith(TOKEN_PREFIX):
        return "that token"
    return repr(token_or_id)
