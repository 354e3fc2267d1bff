"""API tokens: created once, shown once, stored as SHA-256, looked up per request."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store._tables import Token

__all__ = ["TOKEN_PREFIX", "authenticate", "create_token", "hash_token"]

TOKEN_PREFIX = "ipt_"


def hash_token(token: str) -> str:
    """Return the stored form of ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, tenant: str) -> str:
    """Create a token for ``tenant`` and return it; only its hash is kept.

    Raises:
        ValueError: empty or over-long tenant name.
    """
    tenant = tenant.strip()
    if not tenant or len(tenant) > 128:
        raise ValueError("a tenant name is 1 to 128 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(id=uuid.uuid4().hex, tenant=tenant, token_hash=hash_token(token)))
    session.flush()
    return token


def authenticate(session: Session, token: str) -> str | None:
    """Return the tenant of ``token``, or None if unknown or revoked."""
    row = session.scalar(
        select(Token).where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None))
    )
    return row.tenant if row else None
