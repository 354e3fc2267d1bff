"""Workers that share nothing but the database URL: each in its own network namespace,
with its own data folder, reaching PostgreSQL over a veth link; the API elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from service.client import Client
from service.settings import Settings
from service.store import TrialLog, make_engine, make_session_factory
from tests.service._processes import FAST_LEASES, free_port, start_api
from tests.service.conftest import job_spec, make_token

pytestmark = pytest.mark.slow


@dataclass
class Namespace:
    name: str
    host_ip: str
    ns_ip: str


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None:
        pytest.skip("needs root, iproute2 and socat to build network namespaces")
    created: list[Namespace] = []
    tag = uuid.uuid4().hex[:6]
    try:
        for index in range(2):
            subnet = 200 + index
            ns = Namespace(f"ipw{tag}{index}", f"10.{subnet}.77.1", f"10.{subnet}.77.2")
            try:
                _run("ip", "netns", "add", ns.name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
            created.append(ns)
            host_if, ns_if = f"vh{tag}{index}", f"vn{tag}{index}"
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", ns.name)
            _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            _run(
                "ip", "netns", "exec", ns.name, "ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns_if
            )
            _run("ip", "netns", "exec", ns.name, "ip", "link", "set", ns_if, "up")
            _run("ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield created
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


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
