"""Tokens: revoked ones, and deleted tenants' ones, are refused from the next request on.

Every test runs on SQLite and PostgreSQL. Revocations are written through an engine of
their own (or another process), as ``inferprune token revoke`` on another machine would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.cli import main
from service.settings import Settings
from service.store import (
    Job,
    NewJob,
    TenantNotFound,
    Token,
    create_job,
    delete_tenant,
    hash_token,
    list_tokens,
    make_engine,
    make_session_factory,
    revoke_token,
)
from tests.service._processes import free_port, start_api, wait_for_api
from tests.service.conftest import job_spec, make_token, submit


@pytest.fixture
def sessions(settings: Settings) -> Iterator[Any]:
    """A session factory on the test store, apart from the app's engine."""
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _revoke(sessions: Any, token: str) -> None:
    with sessions.begin() as session:
        revoke_token(session, token)


def _delete(sessions: Any, tenant: str) -> Any:
    with sessions.begin() as session:
        return delete_tenant(session, tenant)


def _authenticated_calls(api: TestClient, job_id: str) -> list[tuple[str, str]]:
    """(method, path) of every operation that declares bearer auth, ids filled in."""
    calls = []
    for path, operations in api.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, operation in operations.items():
            if operation.get("security"):
                calls.append((method.upper(), path.replace("{job_id}", job_id)))
    return calls


def _call(api: TestClient, method: str, path: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if method == "POST" and path == "/v1/jobs":
        return api.post(path, data={"spec": json.dumps(job_spec())}, headers=headers)
    return api.request(method, path, headers=headers)


def test_a_revoked_token_gets_401_on_every_route_at_once(
    api: TestClient, settings: Settings, sessions: Any
) -> None:
    token = make_token(settings, "acme")
    other = api.headers["Authorization"].removeprefix("Bearer ")  # acme's first token
    job = submit(api).json()
    api.post(f"/v1/jobs/{job['id']}/cancel")  # a finished job: its event stream ends
    calls = _authenticated_calls(api, job["id"])
    paths = {path for _, path in calls}
    job_path = f"/v1/jobs/{job['id']}"
    assert {"/v1/jobs", job_path, f"{job_path}/events", f"{job_path}/cancel"} <= paths
    for method, path in calls:  # the token works everywhere (a cache would now hold it)
        assert _call(api, method, path, token).status_code != 401, (method, path)

    _revoke(sessions, token)

    for method, path in calls:
        response = _call(api, method, path, token)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    # the tenant's other token, and its jobs, are untouched
    assert _call(api, "GET", job_path, other).status_code == 200


def test_a_deleted_tenant_gets_401_and_cannot_create_a_job(
    api: TestClient, settings: Settings, sessions: Any
) -> None:
    second = make_token(settings, "acme")
    bob = make_token(settings, "bob")
    queued = submit(api).json()
    assert queued["status"] == "queued"

    deleted = _delete(sessions, "acme")

    assert len(deleted.tokens) == 2 and deleted.cancelled_jobs == [queued["id"]]
    for token in (api.headers["Authorization"].removeprefix("Bearer "), second):
        assert _call(api, "POST", "/v1/jobs", token).status_code == 401
        assert _call(api, "GET", f"/v1/jobs/{queued['id']}", token).status_code == 401
    assert _call(api, "GET", "/v1/jobs", bob).json()["total"] == 0  # bob is unaffected
    with sessions() as session:
        rows = session.query(Token).filter(Token.tenant == "acme").all()
        assert all(row.revoked_at is not None for row in rows)
        with pytest.raises(TenantNotFound):
            create_job(session, NewJob(tenant="acme", spec=job_spec(), trials_total=3))


def test_a_tenant_deleted_while_its_job_is_validated_gets_no_job(
    api: TestClient, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is checked when the request arrives; the job is stored seconds later,
    after validation. The store refuses it if the tenant was deleted meanwhile."""
    from service.api.routes import jobs

    validate = jobs._validate

    def validate_then_delete(*args: Any, **kwargs: Any) -> Any:
        accepted = validate(*args, **kwargs)
        _delete(sessions, "acme")
        return accepted

    monkeypatch.setattr(jobs, "_validate", validate_then_delete)
    response = submit(api)
    assert response.status_code == 401, response.text
    with sessions() as session:
        assert session.query(Job).count() == 0


def test_deleting_a_tenant_waits_for_a_job_being_created_and_cancels_it(
    settings: Settings, sessions: Any
) -> None:
    make_token(settings, "acme")
    creating = sessions()
    creating.begin()
    job = create_job(creating, NewJob(tenant="acme", spec=job_spec(), trials_total=3))
    result: list[Any] = []
    deleter = threading.Thread(target=lambda: result.append(_delete(sessions, "acme")))
    deleter.start()
    deleter.join(1.0)
    assert deleter.is_alive(), "the deletion should wait for the job's transaction"
    creating.commit()
    creating.close()
    deleter.join(30)
    assert result and result[0].cancelled_jobs == [job.id]
    with sessions() as session:
        assert _job_status(session, job.id) == "cancelled"


def test_a_job_waits_for_a_tenant_being_deleted_and_is_refused(
    settings: Settings, sessions: Any
) -> None:
    make_token(settings, "acme")
    deleting = sessions()
    deleting.begin()
    delete_tenant(deleting, "acme")
    outcome: list[BaseException | None] = []

    def create() -> None:
        try:
            with sessions.begin() as session:
                create_job(session, NewJob(tenant="acme", spec=job_spec(), trials_total=3))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    creator = threading.Thread(target=create)
    creator.start()
    creator.join(1.0)
    assert creator.is_alive(), "creating the job should wait for the deletion"
    deleting.commit()
    deleting.close()
    creator.join(30)
    assert outcome and isinstance(outcome[0], TenantNotFound)


def _job_status(session: Any, job_id: str) -> str:
    return str(session.get(Job, job_id).status)


def test_an_open_event_stream_ends_when_its_token_is_revoked(
    api: TestClient, settings: Settings, sessions: Any
) -> None:
    token = make_token(settings, "acme")
    job = submit(api).json()  # stays queued: no worker runs, the stream would go on
    threading.Timer(1.5, _revoke, (sessions, token)).start()
    started = time.monotonic()
    with api.stream(
        "GET", f"/v1/jobs/{job['id']}/events", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    assert time.monotonic() - started < 10
    assert "event: status" in lines and "event: done" not in lines


def test_token_list_shows_ids_never_secrets(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--db", settings.database_url]
    assert main(["token", "create", "--tenant", "acme", *store]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["token", "create", "--tenant", "bob", *store]) == 0
    capsys.readouterr()

    assert main(["token", "list", *store]) == 0
    table = capsys.readouterr()
    assert main(["token", "list", "--json", *store]) == 0
    listed = json.loads(capsys.readouterr().out)["tokens"]

    for text in (table.out + table.err, json.dumps(listed)):
        assert token not in text and token[4:12] not in text
        assert hash_token(token) not in text and hash_token(token)[:12] not in text
    assert [(t["tenant"], t["revoked_at"]) for t in listed] == [("acme", None), ("bob", None)]
    assert listed[0]["id"] in table.err and "acme" in table.err

    assert main(["token", "revoke", listed[0]["id"], "--json", *store]) == 0
    revoked = json.loads(capsys.readouterr().out)
    assert revoked["tenant"] == "acme" and revoked["revoked"][0]["revoked_at"]
    assert main(["token", "list", "--tenant", "acme", "--json", *store]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"][0]["revoked_at"]


def test_token_revoke_by_token_and_unknown_ones(
    settings: Settings, sessions: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    store = ["--db", settings.database_url]
    token = make_token(settings, "acme")
    monkeypatch.setattr(sys, "stdin", _Lines(token + "\n"))
    assert main(["token", "revoke", "-", *store]) == 0
    assert "revoked token" in capsys.readouterr().err
    with sessions() as session:
        assert all(info.revoked for info in list_tokens(session, "acme"))

    assert main(["token", "revoke", token, *store]) == 0  # again: nothing changes
    assert main(["token", "revoke", "ipt_not-a-token", *store]) == 1
    assert main(["token", "revoke", "abc", *store]) == 1  # too short to be an id
    assert main(["token", "revoke", "--tenant", "nobody", *store]) == 1
    assert main(["token", "create", "--tenant", " ", *store]) == 1
    err = capsys.readouterr().err
    assert "no token matches" in err and "12-character id" in err and "nobody" in err
    assert "1 to 128 characters" in err
    assert token not in err


class _Lines:
    def __init__(self, text: str) -> None:
        self.text = text

    def readline(self) -> str:
        return self.text


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "token", *args, "--db", settings.database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


# PostgreSQL only: several API processes on one database is a PostgreSQL deployment (API
# servers on several machines), and on SQLite a revocation seen through another engine is
# what test_a_revoked_token_gets_401_on_every_route_at_once proves already.
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_two_api_processes_refuse_a_token_revoked_by_the_cli(
    settings: Settings, tmp_path: Path
) -> None:
    """Two real API servers on one database: after `inferprune token revoke --tenant`
    in a third process, the next request to either one gets 401."""
    ports = [free_port(), free_port()]
    servers = [  # both import at once, and while the tokens are created
        start_api(
            settings.database_url, port, tmp_path / f"api{i}.log", tmp_path / f"d{i}", wait=False
        )
        for i, port in enumerate(ports)
    ]
    try:
        token = _cli(settings, "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
        bob = _cli(settings, "create", "--tenant", "bob").stdout.strip().splitlines()[-1]
        for port in ports:
            wait_for_api(port)

        def get(port: int, who: str) -> int:
            headers = {"Authorization": f"Bearer {who}"}
            return httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers=headers).status_code

        assert [get(port, token) for port in ports] == [200, 200]
        deleted = json.loads(_cli(settings, "revoke", "--tenant", "acme", "--json").stdout)
        assert deleted["tenant"] == "acme" and len(deleted["revoked"]) == 1
        assert [get(port, token) for port in ports] == [401, 401]
        assert [get(port, bob) for port in ports] == [200, 200]
        listed = _cli(settings, "list").stderr
        assert "acme" in listed and token not in listed
    finally:
        for server in servers:
            server.stop()
