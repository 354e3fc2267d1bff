"""Target devices through the API: agents register, long-poll, hold and answer
measurements; tenants never see each other's devices; an agent token reads nothing else.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.settings import Settings
from service.store import (
    AGENT_SCOPE,
    BlobStore,
    Measurement,
    create_token,
    make_engine,
    make_session_factory,
    request_measurement,
)
from tests.service.conftest import job_spec, make_token, run_worker, submit

SPEC = {"cpu": "test cpu", "cores": 2, "onnxruntime": "1.x"}
STATS = {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.2, "mean_ms": 1.05, "min_ms": 0.8}


def _agent_token(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        token = create_token(session, tenant, AGENT_SCOPE)
    engine.dispose()
    return token


def _as(client: TestClient, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _register(client: TestClient, token: str, device: str = "pi4") -> str:
    answer = client.post(
        "/v1/agent/register", json={"device": device, "spec": SPEC}, headers=_as(client, token)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["agent_id"])


def _queue(settings: Settings, tenant: str, device: str, key: str, models: int = 1) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(models):
            archive.writestr(f"{i:06d}.onnx", b"not really onnx")
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        state = request_measurement(
            session,
            BlobStore(settings.artifact_root),
            tenant=tenant,
            device=device,
            key=key,
            settings={"threads": 1, "batch_size": 1, "warmup": 1, "repeats": 3},
            payload=buffer.getvalue(),
            models=models,
        )
    engine.dispose()
    return state.id


def _next(client: TestClient, token: str, agent_id: str) -> Any:
    return client.post(
        "/v1/agent/next", json={"agent_id": agent_id, "wait_s": 0.3}, headers=_as(client, token)
    )


def test_an_agent_registers_serves_its_device_and_the_tenant_sees_it(
    api: TestClient, settings: Settings
) -> None:
    token = _agent_token(settings, "acme")
    agent = _register(api, token)
    assert _next(api, token, agent).status_code == 204  # nothing queued: the poll times out
    devices = api.get("/v1/devices").json()["items"]
    assert [(d["name"], d["live"], d["spec"]["cpu"]) for d in devices] == [
        ("pi4", True, "test cpu")
    ]

    measurement = _queue(settings, "acme", "pi4", "k1", models=2)
    task = _next(api, token, agent).json()
    assert task["id"] == measurement and task["models"] == 2
    models = api.get(task["models_url"], params={"agent_id": agent}, headers=_as(api, token))
    assert models.status_code == 200
    assert len(zipfile.ZipFile(io.BytesIO(models.content)).namelist()) == 2
    renewed = api.post(
        f"/v1/agent/measurements/{measurement}/lease",
        json={"agent_id": agent},
        headers=_as(api, token),
    )
    assert renewed.status_code == 204
    wrong_count = api.post(
        f"/v1/agent/measurements/{measurement}/result",
        json={"agent_id": agent, "latencies": [STATS]},
        headers=_as(api, token),
    )
    assert wrong_count.status_code == 422 and "2 models" in wrong_count.json()["error"]["message"]
    done = api.post(
        f"/v1/agent/measurements/{measurement}/result",
        json={"agent_id": agent, "latencies": [STATS, STATS], "threads": 1},
        headers=_as(api, token),
    )
    assert done.status_code == 204
    device = api.get("/v1/devices").json()["items"][0]
    assert (device["queued"], device["measuring"], device["measured"]) == (0, 0, 1)
    metrics = api.get("/metrics").text
    assert 'inferprune_measurements{status="done"} 1.0' in metrics
    assert "inferprune_agents_live 1.0" in metrics


def test_an_agent_token_reads_nothing_but_its_queue(api: TestClient, settings: Settings) -> None:
    token = _agent_token(settings, "acme")
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/devices"), ("POST", "/v1/jobs")):
        answer = api.request(method, path, headers=_as(api, token))
        assert answer.status_code == 403, (path, answer.text)
        assert "inferprune agent" in answer.json()["error"]["message"]


def test_tenants_never_share_devices_or_measurements(api: TestClient, settings: Settings) -> None:
    acme_agent_token = _agent_token(settings, "acme")
    _register(api, acme_agent_token, "pi4")
    measurement = _queue(settings, "acme", "pi4", "k1")

    # another tenant's agent under the same device name gets nothing of acme's
    other = _agent_token(settings, "globex")
    other_agent = _register(api, other, "pi4")
    assert _next(api, other, other_agent).status_code == 204
    stolen = api.get(
        f"/v1/agent/measurements/{measurement}/models",
        params={"agent_id": other_agent},
        headers=_as(api, other),
    )
    assert stolen.status_code == 409
    # each tenant lists only its own devices
    globex = make_token(settings, "globex")
    assert len(api.get("/v1/devices", headers=_as(api, globex)).json()["items"]) == 1
    # and a job of another tenant cannot name acme's device before globex has one
    spec = job_spec(budget={"latency_ms": 100.0}, latency={"target": "pi5"})
    refused = submit(api, spec, headers=_as(api, globex))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_device"
    assert "pi5" in refused.json()["error"]["message"]


def test_a_vanished_agents_measurement_goes_to_the_next_agent(
    api: TestClient, settings: Settings
) -> None:
    token = _agent_token(settings, "acme")
    first, second = _register(api, token), _register(api, token)
    measurement = _queue(settings, "acme", "pi4", "k1")
    assert _next(api, token, first).json()["id"] == measurement
    assert _next(api, token, second).status_code == 204  # held by the first
    _expire(settings, measurement)
    assert _next(api, token, second).json()["id"] == measurement
    late = api.post(
        f"/v1/agent/measurements/{measurement}/result",
        json={"agent_id": first, "latencies": [STATS]},
        headers=_as(api, token),
    )
    assert late.status_code == 409  # the first agent's answer is dropped
    # an agent that stops cleanly hands its measurement back at once
    other = _queue(settings, "acme", "pi4", "k2")
    assert _next(api, token, first).json()["id"] == other
    api.post("/v1/agent/stop", json={"agent_id": first}, headers=_as(api, token))
    assert _next(api, token, _register(api, token)).json()["id"] == other


def test_a_measurement_whose_agents_keep_vanishing_fails(
    api: TestClient, settings: Settings
) -> None:
    token = _agent_token(settings, "acme")
    agent = _register(api, token)
    measurement = _queue(settings, "acme", "pi4", "k1")
    for _ in range(settings.max_measurement_attempts):
        assert _next(api, token, agent).json()["id"] == measurement
        _expire(settings, measurement)
    assert _next(api, token, agent).status_code == 204
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        row = session.get(Measurement, measurement)
        assert row is not None and row.status == "failed" and "stopped answering" in str(row.error)
    engine.dispose()


def _expire(settings: Settings, measurement: str) -> None:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        session.execute(
            update(Measurement)
            .where(Measurement.id == measurement)
            .values(lease_expires_at=Measurement.created_at)
        )
    engine.dispose()


def _job_for_an_offline_device(
    api: TestClient, settings: Settings, weights: bytes, *, timeout_s: float
) -> tuple[dict[str, Any], threading.Thread]:
    """Submit a job for device pi4, whose agent registered and went quiet, and start a
    worker on it (one unit); return the job and the worker's thread."""
    _register(api, _agent_token(settings, "acme"), "pi4")  # registered, then never polls
    patient = settings.model_copy(update={"device_timeout_s": timeout_s, "agent_live_seconds": 0.5})
    time.sleep(0.6)
    spec = job_spec(budget={"latency_ms": 100.0}, latency={"target": "pi4"})
    job = submit(api, spec, weights=weights).json()
    worker = threading.Thread(target=run_worker, args=(patient,), kwargs={"max_units": 1})
    worker.start()
    return job, worker


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_job_whose_device_has_no_live_agent_waits_then_fails_clearly(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    job, worker = _job_for_an_offline_device(api, settings, tiny_weights, timeout_s=3.0)
    details: list[str | None] = []
    while worker.is_alive():
        details.append(api.get(f"/v1/jobs/{job['id']}").json()["detail"])
        time.sleep(0.2)
    worker.join()
    failed = api.get(f"/v1/jobs/{job['id']}").json()
    assert any(d and "waiting for device 'pi4'" in d for d in details), details
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "device_unavailable"
    assert "pi4" in failed["error"]["message"] and "inferprune agent" in failed["error"]["message"]
    assert failed["detail"] is None


# The agent sets per-request timeouts, as it must on a real network; Starlette
# warns that its in-process TestClient ignores them.
@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_prune_on_the_command_line_measures_on_a_registered_device(
    settings: Settings, tmp_path: Path, tiny_weights: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.agent import Agent
    from service.api.app import create_app
    from service.cli import main

    token = make_token(settings, "acme")
    quick = settings.model_copy(update={"agent_wait_seconds": 0.3})
    with TestClient(create_app(quick)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        agent = Agent("http://testserver", token, "pi4", threads=1, client=client)
        serving = threading.Thread(target=agent.run, daemon=True)
        serving.start()
        wait = time.monotonic() + 30
        while not client.get("/v1/devices").json()["items"] and time.monotonic() < wait:
            time.sleep(0.05)
        weights = tmp_path / "base.safetensors"
        weights.write_bytes(tiny_weights)
        out = tmp_path / "out"
        argv = ["prune", "--arch", "tiny_cnn", "--weights", str(weights), "--input-shape"]
        argv += ["3,16,16", "--dataset", "synthetic", "--latency-ms", "1000", "--trials", "2"]
        argv += ["--steps-per-trial", "2", "--final-epochs", "0.2", "--round-to", "4"]
        argv += ["--db", settings.database_url, "--token", token]
        try:
            target = ["--latency-target", "pi4", "--out", str(out), "--json"]
            assert main([*argv, *target]) == 0
        finally:
            agent.stop()
            serving.join(timeout=30)
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["latency_device"] == "pi4"
    assert report["best"]["latency_device"] == "pi4"
    assert agent.measured >= 2
    # an unknown device is refused before anything loads, naming the flag
    capsys.readouterr()
    assert main([*argv, "--latency-target", "pi9", "--out", str(tmp_path / "x")]) == 1
    said = capsys.readouterr()
    assert "--latency-target: no device named 'pi9'" in said.err + said.out
    assert not (tmp_path / "x").exists()


def test_the_agent_reports_the_nchwc_block_onnxruntime_uses_here() -> None:
    from models.cost import onnxruntime_channel_block
    from service.agent import device_spec

    spec = device_spec(1, ["CPUExecutionProvider"])
    assert spec["nchwc_block"] == onnxruntime_channel_block()  # the layer table pads to it


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_job_cancelled_while_it_waits_for_its_device_ends_cancelled(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    job, worker = _job_for_an_offline_device(api, settings, tiny_weights, timeout_s=120.0)
    deadline = time.monotonic() + 60
    while not api.get(f"/v1/jobs/{job['id']}").json()["detail"]:
        assert time.monotonic() < deadline, "the job never said it waits"
        time.sleep(0.1)
    cancelled_at = time.monotonic()
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert time.monotonic() - cancelled_at < 30  # not the 120 s device timeout
    ended = api.get(f"/v1/jobs/{job['id']}").json()
    assert ended["status"] == "cancelled" and ended["error"] is None
