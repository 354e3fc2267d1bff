"""Workers that share nothing but the database URL: each in its own network namespace,
with its own data folder, reaching PostgreSQL over a veth link; the API elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from service.client import Client
from service.settings import Settings
from service.store import TrialLog, make_engine, make_session_factory
from tests.service._processes import (
    FAST_LEASES,
    Namespace,
    free_port,
    network_namespaces,
    start_api,
)
from tests.service.conftest import job_spec, make_token

pytestmark = pytest.mark.slow


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    with network_namespaces(2) as created:
        yield created


def test_workers_in_their_own_network_namespaces_finish_a_job(
    backend: str, settings: Settings, namespaces: list[Namespace], tmp_path: Path
) -> None:
    if backend != "postgres":
        pytest.skip("several machines share PostgreSQL, not a SQLite file")
    url = make_url(settings.database_url)
    token = make_token(settings, "acme")
    port = free_port()
    api = start_api(settings.database_url, port, tmp_path / "api.log", tmp_path / "api-data")
    relays, workers = [], []
    try:
        for index, ns in enumerate(namespaces):
            # the "network" between a worker machine and the database: a veth link and a
            # TCP relay on the database side of it
            relays.append(
                subprocess.Popen(
                    [
                        "socat",
                        f"TCP-LISTEN:{url.port},bind={ns.host_ip},fork,reuseaddr",
                        f"TCP:127.0.0.1:{url.port}",
                    ],
                    stderr=subprocess.DEVNULL,
                )
            )
            remote = url.set(host=ns.host_ip).render_as_string(hide_password=False)
            own_dir = tmp_path / f"machine{index}"
            own_dir.mkdir()
            log = open(own_dir / "worker.log", "wb")  # noqa: SIM115
            workers.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns.name,
                        sys.executable,
                        "-m",
                        "service.cli",
                        "worker",
                        "--db",
                        remote,
                        "--data-dir",
                        str(own_dir / "data"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=own_dir,
                    env={**os.environ, **FAST_LEASES},
                )
            )
        # the namespaces really are isolated: no loopback route to the database there
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                namespaces[0].name,
                "socat",
                "-T1",
                "-",
                f"TCP:127.0.0.1:{url.port},connect-timeout=1",
            ],
            input=b"",
            capture_output=True,
        )
        assert probe.returncode != 0

        with Client(f"http://127.0.0.1:{port}", token) as client:
            job = client.submit(
                job_spec(
                    search={"trials": 6},
                    finetune={"steps_per_trial": 20, "batch_size": 32, "final_epochs": 0.5},
                )
            )
            final = client.wait(job["id"], poll_s=0.5, timeout_s=300)
        assert final["status"] == "succeeded", final
        sessions = make_session_factory(make_engine(settings.database_url))
        with sessions() as session:
            served_by = set(
                session.scalars(select(TrialLog.worker_id).where(TrialLog.job_id == job["id"]))
            )
        assert {w.pid for w in workers} == {int(w.split("-")[-2]) for w in served_by}
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for relay in relays:
            relay.kill()
        api.stop()
