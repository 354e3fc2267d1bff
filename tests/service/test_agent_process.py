"""Device agents as real processes next to a real ``inferprune serve`` on loopback: an
agent measures a job's candidates, a killed agent's measurement goes to a second one,
and neither ``inferprune agent`` nor the downloaded ``agent.py`` loads torch (the latter
runs in a virtualenv that has only onnxruntime, numpy and httpx)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models.io import onnx_model_bytes
from service.client import Client, ClientError, wait_for_local_server
from service.settings import Settings
from service.store import BlobStore, make_engine, make_session_factory, request_measurement
from service.worker import measurement_key, zip_models
from tests.service._processes import (
    Namespace,
    can_make_namespaces,
    free_port,
    network_namespaces,
    relay,
    wait_until,
)
from tests.service.conftest import job_spec

pytestmark = pytest.mark.slow

FAST = {
    "INFERPRUNE_LEASE_SECONDS": "4",
    "INFERPRUNE_HEARTBEAT_SECONDS": "0.5",
    "INFERPRUNE_POLL_SECONDS": "0.2",
    "INFERPRUNE_TORCH_THREADS": "1",
    "INFERPRUNE_AGENT_WAIT_SECONDS": "1",
    "INFERPRUNE_AGENT_LEASE_SECONDS": "2",
    "PYTHONUNBUFFERED": "1",
}


class Server:
    """``inferprune serve`` with ``workers`` workers in a temporary data folder; its agents
    run in a network namespace of their own when this process may build one (root),
    reaching the server over a veth link, else on loopback."""

    def __init__(self, tmp_path: Path, device_net: Namespace | None, workers: int) -> None:
        self.data = tmp_path / "data"
        self.tmp = tmp_path
        self.db = self.data / "inferprune.db"
        self.device_net = device_net
        self.workers = workers
        self.start(port=0)
        self.agent_token = self._cli("token", "create", "--tenant", "default", "--agent")
        self.agent_url = self.url
        self._relay = ExitStack()
        if device_net is not None:
            port = int(self.url.rsplit(":", 1)[1].strip("/"))
            address = self._relay.enter_context(relay(device_net.host_ip, free_port(), port))
            self.agent_url = f"http://{address}"

    def start(self, port: int) -> None:
        """Start the server (``port`` 0: any free port) and wait until it answers."""
        self._log = open(self.tmp / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers"]
            + [str(self.workers), "--data-dir", str(self.data)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAST},
        )
        try:
            self.client: Client = wait_for_local_server(self.data, self.process, timeout=90)
        except ClientError as exc:
            pytest.fail(f"{exc.message}: {(self.tmp / 'server.log').read_text()[-3000:]}")
        self.url = str(self.client.server)

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *args, "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout.strip().splitlines()[-1]

    def agent(self, name: str, python: str = sys.executable, script: str | None = None) -> Any:
        """Start an agent of device ``name`` (``inferprune agent``, or ``script`` run by
        ``python``)."""
        command = [python, script] if script else [python, "-m", "service.cli", "agent"]
        command += ["--server", self.agent_url, "--token", self.agent_token, "--device", name]
        if self.device_net is not None:
            command = self.device_net.exec(*command)
        log = open(self.tmp / f"agent-{name}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def close(self, *, relay_too: bool = True) -> None:
        if relay_too:
            self._relay.close()
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
        self._log.close()

    def restart(self) -> None:
        """Stop the server and start it again on the same port."""
        port = int(self.url.rsplit(":", 1)[1].strip("/"))
        self.close(relay_too=False)  # the device's network stays; the server goes
        (self.data / "client.json").unlink()
        self.start(port)


def _serve(tmp_path: Path, workers: int) -> Iterator[Server]:
    with ExitStack() as stack:
        device_net = None
        if can_make_namespaces():
            (device_net,) = stack.enter_context(network_namespaces(1))
        running = Server(tmp_path, device_net, workers)
        yield running
        running.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server without workers: agents and queued measurements need none, and a worker
    importing torch beside them only slows them down."""
    yield from _serve(tmp_path, workers=0)


@pytest.fixture
def server_with_worker(tmp_path: Path) -> Iterator[Server]:
    """A server with one worker, for jobs."""
    yield from _serve(tmp_path, workers=1)


def _stop(agent: Any) -> int:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    return int(agent.wait(timeout=30))


def _loads_torch(pid: int) -> bool:
    """Whether the agent (``pid``, or the python under ``ip netns exec``) mapped torch."""
    pids = [pid, *_children(pid)]
    maps = "".join(Path(f"/proc/{p}/maps").read_text() for p in pids)
    return "libtorch" in maps or "torch/_C" in maps


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _live_devices(client: Client) -> list[str]:
    return [d["name"] for d in client.devices()["items"] if d["live"]]


def test_an_agent_measures_a_jobs_candidates(
    server_with_worker: Server, tiny_weights: bytes
) -> None:
    server = server_with_worker
    agent = server.agent("box")
    try:
        wait_until(lambda: _live_devices(server.client) == ["box"], 60, "the agent to register")
        assert not _loads_torch(agent.pid)  # `inferprune agent` never imports torch
        if server.device_net is not None:  # another machine, as far as the network goes
            assert os.readlink(f"/proc/{agent.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        spec = job_spec(
            budget={"flops": None, "latency_ms": 1000.0},
            latency={"target": "box", "repeats": 5},
            search={"trials": 3},
        )
        job = server.client.submit(spec, weights=tiny_weights)
        done = server.client.wait(job["id"], poll_s=0.3, timeout_s=300)
        assert done["status"] == "succeeded", done
        assert done["baseline"]["latency_device"] == "box"
        assert done["best"]["latency_device"] == "box"
        trials = server.client.trials(job["id"])["items"]
        measured = [t for t in trials if t["latency_ms"] is not None]
        assert measured and {t["latency_device"] for t in measured} == {"box"}
        device = server.client.devices()["items"][0]
        assert device["measured"] >= 2 and device["spec"]["cores"] == os.cpu_count()
        assert not _loads_torch(agent.pid)
    finally:
        assert _stop(agent) == 0  # SIGTERM: a clean exit


def _slow_model() -> bytes:
    torch.manual_seed(0)
    return onnx_model_bytes(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)), (32, 48, 48))


def _queue_slow_measurement(server: Server, repeats: int = 3000) -> str:
    """Queue one measurement that takes seconds (many repeats of a real conv)."""
    settings = Settings(data_dir=server.data)
    wire = {"threads": 1, "batch_size": 1, "warmup": 1, "repeats": repeats}
    models = [_slow_model()]
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        state = request_measurement(
            session,
            BlobStore(None),
            tenant="default",
            device="box",
            key=measurement_key(models, wire),
            settings=wire,
            payload=zip_models(models),
            models=1,
        )
    engine.dispose()
    return state.id


def _holder(db: Path, measurement: str) -> tuple[str, str | None]:
    with sqlite3.connect(db, timeout=30) as conn:
        status, agent = conn.execute(
            "SELECT status, agent_id FROM inferprune_measurements WHERE id = ?", (measurement,)
        ).fetchone()
    return str(status), agent


def test_a_killed_agents_measurement_goes_to_a_second_agent(server: Server) -> None:
    first = server.agent("box")
    wait_until(lambda: _live_devices(server.client) == ["box"], 60, "the first agent")
    measurement = _queue_slow_measurement(server)
    wait_until(lambda: _holder(server.db, measurement)[0] == "leased", 30, "the first to claim")
    held_by = _holder(server.db, measurement)[1]
    first.kill()  # mid-measurement, no goodbye
    first.wait(timeout=30)
    second = server.agent("box")
    try:
        wait_until(lambda: _holder(server.db, measurement)[0] == "done", 120, "the second")
        status, finished_by = _holder(server.db, measurement)
        assert finished_by is not None and finished_by != held_by
    finally:
        assert _stop(second) == 0


def test_the_downloaded_agent_runs_without_torch(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    answer = server.client._request("GET", "/v1/agent.py")
    script.write_bytes(answer.content)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "onnxruntime", "numpy", "httpx"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0:
        pytest.skip(f"pip cannot install onnxruntime, numpy, httpx here: {installed.stderr[-500:]}")
    modules = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "torch" not in modules and "inferprune" not in modules
    agent = server.agent("box", python=python, script=str(script))
    try:
        wait_until(lambda: _live_devices(server.client) == ["box"], 60, "the agent to register")
        measurement = _queue_slow_measurement(server)
        wait_until(lambda: _holder(server.db, measurement)[0] == "done", 120, "a measurement")
    finally:
        assert _stop(agent) == 0


def test_an_agent_survives_the_server_restarting(server: Server) -> None:
    agent = server.agent("box")
    try:
        wait_until(lambda: _live_devices(server.client) == ["box"], 60, "the agent to register")
        server.restart()  # the agent's long poll breaks; it backs off and comes back
        measurement = _queue_slow_measurement(server, repeats=50)
        wait_until(lambda: _holder(server.db, measurement)[0] == "done", 120, "a measurement")
        assert _live_devices(server.client) == ["box"]
    finally:
        assert _stop(agent) == 0
