"""A PostgreSQL server for tests: whether one answers, and fresh databases on it (the
``backend`` fixture in ``tests/conftest.py`` runs a test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

PG_ADMIN_URL = os.environ.get(
    "INFERPRUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_available() -> str | None:
    """Return why PostgreSQL cannot be used, or None if it can."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(PG_ADMIN_URL)
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, connect_timeout=3
        ):
            return None
    except Exception as exc:  # any failure means: not here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"


def _admin_connection() -> Any:
    """Return an autocommitting connection to the server's admin database."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        dbname=admin.database,
        autocommit=True,
    )


def fresh_postgres_database() -> tuple[str, Callable[[], None]]:
    """Create an empty PostgreSQL database; return its URL and a call that drops it."""
    from sqlalchemy.engine import make_url

    name = f"inferprune_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with _admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url = make_url(PG_ADMIN_URL).set(database=name)
    return url.render_as_string(hide_password=False), drop
