"""A real ``inferprune serve`` on loopback: two workers on one SQLite store, one killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.client import Client, ClientError, wait_for_local_server
from tests.service._processes import Process
from tests.service.conftest import job_spec

pytestmark = pytest.mark.slow


Server = tuple[Client, Path, Process]


def _start_server(tmp_path: Path) -> Server:
    data = tmp_path / "data"
    args = ["serve", "--port", "0", "--workers", "2", "--data-dir", str(data)]
    process = Process(args, tmp_path / "server.log")
    try:
        client = wait_for_local_server(data, process.popen, timeout=90)
    except ClientError as exc:
        process.kill()
        pytest.fail(f"{exc.message}: {(tmp_path / 'server.log').read_text()[-3000:]}")
    return client, tmp_path, process


def _stop_server(running: Server) -> None:
    client, _, process = running
    client.close()
    process.stop()


@pytest.fixture(scope="module")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """The module's servers, the newest last: starting one (and its workers' torch
    imports) costs more than most jobs here, so tests share it while it runs."""
    started: list[Server] = []
    yield started
    for running in started:
        _stop_server(running)


@pytest.fixture
def server(_servers: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A running ``inferprune serve`` with two workers: the module's, or a new one
    where a test has stopped it."""
    if not _servers or _servers[-1][2].popen.poll() is not None:
        _servers.append(_start_server(tmp_path_factory.mktemp("serve")))
    return _servers[-1]


def _lease_holder(db: Path) -> int | None:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute(
            "SELECT w.pid FROM inferprune_leases l JOIN inferprune_workers w "
            "ON w.id = l.worker_id WHERE l.kind = 'trial' AND l.trial_number IS NOT NULL "
            "LIMIT 1"
        ).fetchone()
    return int(row[0]) if row else None


def test_a_users_onnx_model_through_a_running_server(
    server: Server,
) -> None:
    from models.cost import measure_cost
    from models.data import load_dataset
    from models.io import import_onnx, unfold_batchnorm
    from tests.service.test_onnx_upload import SHAPE, _spec, user_model_onnx

    client, tmp_path, _ = server
    job = client.submit(_spec(), model=user_model_onnx())
    finished = client.wait(job["id"], poll_s=0.5, timeout_s=300)
    assert finished["status"] == "succeeded", finished
    onnx = client.download(job["id"], tmp_path / "pruned.onnx", format="onnx")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = np.zeros((2, *SHAPE), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (2, 10)
    # the downloaded file has the MACs the job planned and reports
    delivered = import_onnx(onnx.read_bytes()).model
    unfold_batchnorm(delivered, load_dataset("synthetic", input_shape=SHAPE).train.batches(32))
    macs = measure_cost(delivered, SHAPE).macs
    assert macs == finished["best"]["macs"] <= 0.5 * finished["baseline"]["macs"]


# last: it stops the module's server (the fixture would start another for a later test)
def test_two_workers_a_killed_one_and_the_job_still_completes(
    server: Server, tiny_weights: bytes
) -> None:
    client, tmp_path, process = server
    spec = job_spec(
        search={"trials": 6}, finetune={"steps_per_trial": 40, "final_epochs": 1, "batch_size": 32}
    )
    job = client.submit(spec, weights=tiny_weights)
    db = tmp_path / "data" / "inferprune.db"
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        victim = _lease_holder(db)
        time.sleep(0.1)
    assert victim is not None, "no worker ever held a trial"
    os.kill(victim, signal.SIGKILL)

    finished = client.wait(job["id"], poll_s=0.5, timeout_s=300)

    assert finished["status"] == "succeeded", finished
    assert finished["progress"]["trials_done"] == 6
    trials = client.trials(job["id"])["items"]
    # the kill lands mid-trial (that trial fails and is redone) or, rarely, after the
    # trial's result was told (the result stands and nothing counts as failed)
    lost = [t for t in trials if "lease expired" in (t.get("error") or "")]
    assert finished["progress"]["trials_failed"] == len(lost) <= 1
    onnx = client.download(job["id"], tmp_path / "model.onnx", format="onnx")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((2, 3, 16, 16), dtype=np.float32)})[0]
    assert out.shape == (2, 10)
    log = (tmp_path / "server.log").read_text()
    assert "database is locked" not in log
    assert "starting a new one" in log  # the supervisor replaced the killed worker
    assert "reaped trial of job" in log  # and its lease was taken back

    assert process.stop() == 0  # SIGINT: the server and its workers end cleanly
