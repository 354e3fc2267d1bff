"""Database engines: SQLite in WAL mode with a busy timeout, or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "is_sqlite", "make_engine", "make_session_factory"]

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another writer before "database is locked"."""


def is_sqlite(url: str) -> bool:
    """Return whether ``url`` points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def engine_options(url: str) -> dict[str, Any]:
    """Return ``create_engine`` keyword arguments suited to ``url``'s backend (also used
    for Optuna's RDBStorage, so both share the same connection behaviour)."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}


def make_engine(url: str) -> Engine:
    """Return an engine for ``url``.

    SQLite connections switch to WAL (readers never block the writer), wait up to
    :data:`SQLITE_BUSY_TIMEOUT_S` for locks, and enforce foreign keys. PostgreSQL
    connections are checked before use, so a restarted server is reconnected to.
    """
    engine = create_engine(url, **engine_options(url))
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory for ``engine`` (objects stay usable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)
