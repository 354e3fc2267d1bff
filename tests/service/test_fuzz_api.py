"""Schemathesis against the OpenAPI schema of a live server: no input makes it answer 5xx.

Bounded: a few dozen generated requests per operation, on loopback only. Run the wider,
time-boxed version with the command in README ("Bad clients").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service.settings import Settings
from service.store import make_engine, upgrade_schema
from tests.service._processes import free_port
from tests.service.conftest import job_spec, make_token

pytestmark = pytest.mark.slow


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A live API (SQLite, no workers) with one job; yields (url, token, job id)."""
    from service.api.app import create_app
    from service.client import Client

    root: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{root / 'store.db'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    config = Settings(
        db_url=url,
        data_dir=root / "data",
        max_active_jobs_per_tenant=10_000,
        max_upload_bytes=1 << 20,
    )
    token = make_token(config, "fuzz")
    port = free_port()
    server = _Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    with Client(base, token) as client:
        job = client.submit(job_spec())
    yield base, token, job["id"]
    server.should_exit = True
    thread.join(timeout=10)


def test_no_request_makes_the_server_fail(live: tuple[str, str, str]) -> None:
    base, token, job_id = live
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            if "job_id" in (case.path_parameters or {}) and hash(str(case.path_parameters)) % 2:
                case.path_parameters["job_id"] = job_id  # half the time, a job that exists
            case.call_and_validate(
                base_url=base, headers=headers, checks=[not_a_server_error], timeout=120
            )

        check()
    assert len(tested) == 19  # the jobs API (11) and the devices and agent routes (8)
    assert "POST /v1/agent/next" in tested and "GET /v1/devices" in tested
