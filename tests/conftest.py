"""Shared test configuration: deterministic torch, quiet third-party warnings, and the
database backends.

Every test that takes ``backend`` runs twice: on SQLite (a file in tmp_path) and on
PostgreSQL (a fresh database on 127.0.0.1:5432, dropped afterwards). PostgreSQL tests
skip, saying why, when no server answers; with INFERPRUNE_REQUIRE_POSTGRES=1 (CI) they
fail instead.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable

import pytest
import torch

os.environ.setdefault("INFERPRUNE_DATA_ROOT", "/nonexistent-inferprune-data")
# Tiny models gain nothing from intra-op parallelism, and two threads on a busy two-core
# machine spin against each other: one thread keeps test times stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")


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


@pytest.fixture(scope="session")
def _postgres_reason() -> str | None:
    return postgres_available()


def fresh_postgres_database() -> tuple[str, Callable[[], None]]:
    """Create an empty PostgreSQL database; return its URL and a call that drops it."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    name = f"inferprune_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.username,
        dbname=admin.database,
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(
            host=admin.host,
            port=admin.port,
            user=admin.username,
            dbname=admin.database,
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, _postgres_reason: str | None) -> str:
    """The database under test: ``sqlite`` or ``postgres`` (skipped, saying why, where no
    server answers; failed instead with ``INFERPRUNE_REQUIRE_POSTGRES=1``, as in CI)."""
    if request.param == "postgres" and _postgres_reason is not None:
        if os.environ.get("INFERPRUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here: {_postgres_reason}")
        pytest.skip(_postgres_reason)
    return str(request.param)
