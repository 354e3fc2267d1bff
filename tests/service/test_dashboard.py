"""optuna-dashboard opens the service's studies, read-only, with the store's URL."""

from __future__ import annotations

import argparse
import io
import json
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.settings import Settings
from service.store import make_engine
from tests.service.conftest import job_spec, run_worker, submit


def _read_only_url(settings: Settings) -> tuple[str, Any]:
    """A URL through which nothing can be written (a SELECT-only role, or a read-only
    SQLite connection), and a clean-up function."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true", lambda: None
    role = f"dashboard_{uuid.uuid4().hex[:8]}"
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"))
            conn.execute(text(f"REVOKE USAGE ON SCHEMA public FROM {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        engine.dispose()

    return url.set(username=role).render_as_string(hide_password=False), drop


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "wsgi.input": io.BytesIO(),
    }
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    return status[0], json.loads(body)


def test_dashboard_lists_the_job_study_read_only(api: TestClient, settings: Settings) -> None:
    from optuna_dashboard import wsgi

    job = submit(api, job_spec(search={"trials": 2})).json()
    run_worker(settings)
    url, drop = _read_only_url(settings)
    try:
        summaries = optuna.get_all_study_summaries(
            optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
        )
        names = {s.study_name: s for s in summaries}
        study = names[f"inferprune-job-{job['id']}"]
        assert study.n_trials == 2
        app = wsgi(url)
        status, body = _get(app, "/api/studies")
        assert status.startswith("200")
        listed = {s["study_name"]: s for s in body["study_summaries"]}
        entry = listed[f"inferprune-job-{job['id']}"]
        assert entry["directions"] == ["maximize"]
        status, detail = _get(app, f"/api/studies/{entry['study_id']}")
        assert status.startswith("200") and len(detail["trials"]) == 2
    finally:
        drop()


def test_the_dashboard_extra_installs_optuna_dashboard() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert [r for r in extras["dashboard"] if r.startswith("optuna-dashboard")], extras


def _help_texts(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """(prog, help) of ``parser`` and of every command and action below it."""
    yield parser.prog, " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _help_texts(command)


def test_every_help_recommending_optuna_dashboard_says_how_to_install_it() -> None:
    from service.cli import build_parser

    recommending = [
        (prog, help_text)
        for prog, help_text in _help_texts(build_parser())
        if "optuna-dashboard" in help_text
    ]
    assert recommending  # `inferprune prune --help` recommends it
    for prog, help_text in recommending:
        assert "pip install 'inferprune[dashboard]'" in help_text, prog
