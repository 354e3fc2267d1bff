"""Faults that happen in production, each with real processes: the API killed and
restarted, PostgreSQL restarted, the artifact disk full, a cancel while workers run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.client import Client, ClientError
from service.settings import Settings
from service.store import (
    Artifact,
    Blob,
    Job,
    Lease,
    make_engine,
    make_session_factory,
    upgrade_schema,
)
from tests.service._processes import (
    PrivatePostgres,
    free_port,
    start_api,
    start_worker,
    wait_for_api,
    wait_until,
)
from tests.service.conftest import job_spec, make_token, run_worker, submit

pytestmark = pytest.mark.slow

SLOW_TRIALS = {"steps_per_trial": 40, "final_epochs": 0.5, "batch_size": 32}


def _poll(client: Client, job_id: str) -> dict:  # type: ignore[type-arg]
    """The job, or an empty dict while the API is down."""
    try:
        return client.job(job_id)
    except ClientError as exc:
        if exc.code in ("unreachable", "connection_lost", "timeout"):
            return {}
        raise


def _wait_status(client: Client, job_id: str, statuses: set[str], timeout_s: float) -> dict:  # type: ignore[type-arg]
    job: dict = {}  # type: ignore[type-arg]

    def done() -> bool:
        nonlocal job
        job = _poll(client, job_id)
        return job.get("status") in statuses

    wait_until(done, timeout_s, f"job {job_id} to become {statuses}")
    return job


def _store_progress(db_url: str, job_id: str) -> tuple[int, str]:
    """The job's finished trials and status, read from the store without the API."""
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            row = session.get(Job, job_id)
            assert row is not None
            return row.trials_finished, str(row.status)
    finally:
        engine.dispose()


def test_api_killed_and_restarted_mid_job(settings: Settings, tmp_path: Path) -> None:
    token = make_token(settings, "acme")
    port = free_port()
    # the worker imports torch while the API starts: neither waits for the other
    api = start_api(
        settings.database_url, port, tmp_path / "api.log", tmp_path / "data", wait=False
    )
    worker = start_worker(settings.database_url, tmp_path / "worker.log", tmp_path / "data")
    client = Client(f"http://127.0.0.1:{port}", token)
    try:
        wait_for_api(port)
        job = client.submit(job_spec(search={"trials": 5}, finetune=SLOW_TRIALS))
        wait_until(
            lambda: _poll(client, job["id"]).get("progress", {}).get("trials_done", 0) >= 1,
            120,
            "a first trial",
        )
        api.kill()
        at_kill = _store_progress(settings.database_url, job["id"])  # the API is gone
        wait_until(  # the worker keeps training while no API runs
            lambda: _store_progress(settings.database_url, job["id"]) != at_kill,
            120,
            "the worker to get on with the job while the API is down",
        )
        api = start_api(settings.database_url, port, tmp_path / "api.log", tmp_path / "data")
        final = _wait_status(client, job["id"], {"succeeded", "failed"}, 300)
        assert final["status"] == "succeeded", final
        assert [j["id"] for j in client.jobs()["items"]] == [job["id"]]
        assert len(client.trials(job["id"])["items"]) >= 5
        assert worker.popen.poll() is None  # the worker never noticed
    finally:
        client.close()
        api.stop()
        worker.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot run a private PostgreSQL here: {exc}")
    yield server
    server.destroy()


def test_postgres_restarted_mid_job(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    engine = make_engine(private_postgres.url)
    upgrade_schema(engine)
    engine.dispose()
    settings = Settings(db_url=private_postgres.url, data_dir=tmp_path / "data")
    token = make_token(settings, "acme")
    port = free_port()
    api = start_api(private_postgres.url, port, tmp_path / "api.log", tmp_path / "data", wait=False)
    workers = [
        start_worker(private_postgres.url, tmp_path / f"worker{i}.log", tmp_path / "data")
        for i in range(2)
    ]
    client = Client(f"http://127.0.0.1:{port}", token)
    try:
        wait_for_api(port)
        job = client.submit(job_spec(search={"trials": 6}, finetune=SLOW_TRIALS))
        wait_until(
            lambda: _poll(client, job["id"]).get("progress", {}).get("trials_running", 0) >= 1,
            120,
            "a running trial",
        )
        private_postgres.restart()  # every connection is cut mid-trial
        final = _wait_status(client, job["id"], {"succeeded", "failed"}, 300)
        assert final["status"] == "succeeded", final
        assert final["progress"]["trials_done"] == 6
        assert all(w.popen.poll() is None for w in workers)  # reconnected, not crashed
    finally:
        client.close()
        api.stop()
        for w in workers:
            w.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "artifacts"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_artifact_disk_fails_the_job_clearly(settings: Settings, tiny_disk: Path) -> None:
    from service.api.app import create_app

    full = settings.model_copy(update={"artifact_root": tiny_disk})
    token = make_token(full, "acme")
    with TestClient(create_app(full)) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        job = submit(api, job_spec(search={"trials": 3})).json()
        run_worker(full)
        body = api.get(f"/v1/jobs/{job['id']}").json()
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "storage_error"
    assert "No space left on device" in body["error"]["message"]
    sessions = make_session_factory(make_engine(full.database_url))
    with sessions() as session:  # the database is consistent: nothing half-written
        assert session.scalar(select(func.count()).select_from(Lease)) == 0
        row = session.get(Job, job["id"])
        assert row is not None and row.trials_running == 0
        for artifact in session.scalars(select(Artifact)):
            blob = session.get(Blob, artifact.blob_id)
            assert blob is not None and (blob.data is not None or Path(blob.path or "").exists())


def test_cancel_while_two_workers_run(settings: Settings, tmp_path: Path) -> None:
    token = make_token(settings, "acme")
    port = free_port()
    api = start_api(
        settings.database_url, port, tmp_path / "api.log", tmp_path / "data", wait=False
    )
    workers = [
        start_worker(settings.database_url, tmp_path / f"worker{i}.log", tmp_path / "data")
        for i in range(2)
    ]
    client = Client(f"http://127.0.0.1:{port}", token)
    try:
        wait_for_api(port)
        job = client.submit(job_spec(search={"trials": 10}, finetune=SLOW_TRIALS))
        wait_until(
            lambda: (
                _poll(client, job["id"]).get("progress", {}).get("trials_done", 0) >= 1
                and client.job(job["id"])["progress"]["trials_running"] >= 1
            ),
            180,
            "trials running",
        )
        cancelled = client.cancel(job["id"])
        at_cancel = cancelled["progress"]
        final = _wait_status(client, job["id"], {"cancelled"}, 120)
        done = final["progress"]["trials_done"]
        assert (
            at_cancel["trials_done"]
            <= done
            <= at_cancel["trials_done"] + at_cancel["trials_running"]
        )
        states = [t["state"] for t in client.trials(job["id"])["items"]]
        assert "running" not in states and len(states) <= done + final["progress"]["trials_failed"]
        assert done < 10
    finally:
        client.close()
        api.stop()
        for w in workers:
            w.stop()
