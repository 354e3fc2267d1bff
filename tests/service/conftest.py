"""Service fixtures: a fresh store per test on each backend (``backend``, from
``tests/conftest.py``), an API client, a worker."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from service.settings import Settings
from service.store import (
    create_token,
    make_engine,
    make_session_factory,
    upgrade_schema,
)
from tests._postgres import fresh_postgres_database


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a fresh, migrated store on ``backend`` with quick leases."""
    drop = None
    if backend == "postgres":
        url, drop = fresh_postgres_database()
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    yield Settings(
        data_dir=tmp_path / "data",
        db_url=url,
        lease_seconds=5.0,
        heartbeat_seconds=0.5,
        poll_seconds=0.1,
        max_upload_bytes=2 << 20,
        max_trials_per_job=50,
        max_active_jobs_per_tenant=3,
        torch_threads=1,
    )
    if drop is not None:
        drop()


def make_token(settings: Settings, tenant: str) -> str:
    """Create a token for ``tenant`` in the settings' store."""
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        token = create_token(session, tenant)
    engine.dispose()
    return token


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on the app, authenticated as tenant ``acme``."""
    from service.api.app import create_app

    token = make_token(settings, "acme")
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def job_spec(**overrides: Any) -> dict[str, Any]:
    """A tiny job whose trials take a fraction of a second."""
    spec: dict[str, Any] = {
        "arch": "tiny_cnn",
        "input_shape": [3, 16, 16],
        "dataset": "synthetic",
        "budget": {"flops": 0.5},
        "search": {"trials": 3, "seed": 0},
        "finetune": {"steps_per_trial": 3, "final_epochs": 0.5, "lr": 0.05, "batch_size": 32},
        "pruning": {"round_to": 4},
        "latency": {"repeats": 3, "warmup": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def submit(
    client: TestClient,
    spec: dict[str, Any] | None = None,
    *,
    weights: bytes | None = None,
    dataset: tuple[str, bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a job; return the response."""
    files: dict[str, Any] = {}
    if weights is not None:
        files["weights"] = ("weights.safetensors", weights, "application/octet-stream")
    if dataset is not None:
        files["dataset"] = (dataset[0], dataset[1], "application/octet-stream")
    return client.post(
        "/v1/jobs",
        data={"spec": json.dumps(spec or job_spec())},
        files=files or None,
        headers=headers or {},
    )


@pytest.fixture(scope="session")
def tiny_weights() -> bytes:
    """tiny_cnn (10 classes, 3x16x16) trained briefly on synthetic data, as safetensors."""
    from models.data import load_dataset
    from models.io import CheckpointInfo, checkpoint_bytes
    from models.prune import Plan
    from models.train import fine_tune
    from models.zoo import build_model

    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=(3, 16, 16))
    model = build_model("tiny_cnn", 10, (3, 16, 16))
    fine_tune(model, data.train, epochs=2, lr=0.05, batch_size=32)
    return checkpoint_bytes(model, CheckpointInfo("tiny_cnn", 10, (3, 16, 16), Plan()))


def run_worker(settings: Settings, max_units: int | None = None) -> int:
    """Run an in-process worker until no work is left; return units done."""
    from service.worker import Worker

    return Worker(settings).run(max_units=max_units, exit_when_idle=True)


def torch_state_dict_bytes(model: torch.nn.Module) -> bytes:
    """Return ``torch.save(model.state_dict())`` bytes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``inferprune ARGV`` in-process; return its exit status, stdout and stderr."""
    from service.cli import main

    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_json(tmp_path: Path, data: object, name: str = "seq.json") -> str:
    """Write ``data`` as JSON to ``tmp_path / name``; return the path as a CLI argument."""
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)
