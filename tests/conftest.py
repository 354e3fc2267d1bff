"""Shared test configuration: deterministic torch, quiet third-party warnings, and the
database backends.

Every test that takes ``backend`` runs twice: on SQLite (a file in tmp_path) and on
PostgreSQL (a fresh database on 127.0.0.1:5432, dropped afterwards). PostgreSQL tests
skip, saying why, when no server answers; with INFERPRUNE_REQUIRE_POSTGRES=1 (CI) they
fail instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests._postgres import fresh_postgres_database, postgres_available

os.environ.setdefault("INFERPRUNE_DATA_ROOT", "/nonexistent-inferprune-data")
# Tiny models gain nothing from intra-op parallelism, and two threads on a busy two-core
# machine spin against each other: one thread keeps test times stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")


@pytest.fixture(scope="session")
def _postgres_reason() -> str | None:
    return postgres_available()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, _postgres_reason: str | None) -> str:
    """The database under test: ``sqlite`` or ``postgres`` (skipped, saying why, where no
    server answers; failed instead with ``INFERPRUNE_REQUIRE_POSTGRES=1``, as in CI)."""
    if request.param == "postgres" and _postgres_reason is not None:
        if os.environ.get("INFERPRUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here: {_postgres_reason}")
        pytest.skip(_postgres_reason)
    return str(request.param)


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a database on ``backend`` with no tables at all (a SQLite file in
    tmp_path, or a fresh PostgreSQL database, dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url, drop = fresh_postgres_database()
    try:
        yield url
    finally:
        drop()
