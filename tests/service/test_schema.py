"""Migrations are a command; servers and workers refuse an outdated schema."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, text

from service.cli import main
from service.settings import Settings
from service.store import Base, current_revision, head_revision, make_engine, upgrade_schema


def _set_revision(url: str, revision: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE inferprune_alembic_version SET version_num = :r"), {"r": revision}
        )
    engine.dispose()


def test_db_upgrade_creates_and_is_idempotent(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(empty_database_url)
    assert current_revision(engine) is None and inspect(engine).get_table_names() == []

    assert main(["db", "upgrade", "--db", empty_database_url]) == 0
    assert f"upgraded from nothing to revision {head_revision()}" in capsys.readouterr().err
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert current_revision(engine) == head_revision()
    assert main(["token", "create", "--tenant", "acme", "--db", empty_database_url]) == 0
    capsys.readouterr()

    assert main(["db", "upgrade", "--db", empty_database_url]) == 0  # again: nothing changes
    assert f"already at revision {head_revision()}" in capsys.readouterr().err
    assert current_revision(engine) == head_revision()
    assert main(["token", "list", "--json", "--db", empty_database_url]) == 0
    tokens = json.loads(capsys.readouterr().out)["tokens"]
    assert [t["tenant"] for t in tokens] == ["acme"], "the second upgrade kept the data"
    engine.dispose()


def test_server_refuses_an_outdated_schema(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_revision(settings.database_url, "0000_older")
    code = main(["serve", "--db", settings.database_url, "--workers", "0", "--port", "0"])
    assert code == 1
    message = capsys.readouterr().err
    assert "0000_older" in message and "inferprune db upgrade --db" in message


def test_worker_refuses_an_outdated_schema(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_revision(settings.database_url, "0000_older")
    assert main(["worker", "--db", settings.database_url]) == 1
    assert "run `inferprune db upgrade`" in capsys.readouterr().err


def test_an_empty_database_needs_upgrade_first(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    assert main(["token", "create", "--tenant", "t", "--db", url]) == 1
    assert "no inferprune tables yet" in capsys.readouterr().err
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    assert main(["token", "create", "--tenant", "t", "--db", url]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ipt_")
