"""Events, health, metrics and the OpenAPI page."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from service.settings import Settings
from tests.service.conftest import job_spec, run_worker, submit


def _events(api: TestClient, job_id: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    out = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                out.append((event, json.loads(line[6:])))
    return out


def test_events_stream_status_trials_and_done(api: TestClient, settings: Settings) -> None:
    job = submit(api, job_spec(search={"trials": 2})).json()
    run_worker(settings)
    events = _events(api, job["id"])
    names = [name for name, _ in events]
    assert names.count("trial") == 2 and names[-1] == "done"
    assert events[-1][1]["status"] == "succeeded"
    assert {e["state"] for name, e in events if name == "trial"} <= {"complete", "pruned"}
    assert "status" in names


def test_healthz(api: TestClient) -> None:
    body = api.get("/healthz").json()
    assert body["status"] == "ok" and body["database"] in ("sqlite", "postgresql")


def test_metrics_count_jobs_and_trials(api: TestClient, settings: Settings) -> None:
    submit(api, job_spec(search={"trials": 2}))
    run_worker(settings)
    submit(api)
    text = api.get("/metrics").text
    assert 'inferprune_jobs{status="succeeded"} 1.0' in text
    assert 'inferprune_jobs{status="queued"} 1.0' in text
    assert "inferprune_trial_seconds_count 2.0" in text
    assert "inferprune_queue_depth 3.0" in text
    assert "inferprune_workers_active" in text and "inferprune_trial_failures_total" in text


def test_openapi_documents_every_field(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/trials",
        "/v1/jobs/{job_id}/pareto",
        "/v1/jobs/{job_id}/pareto.png",
        "/v1/jobs/{job_id}/checkpoint",
        "/v1/jobs/{job_id}/events",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    undocumented = []
    for name, model in schema["components"]["schemas"].items():
        if name.startswith(("HTTPValidationError", "ValidationError", "Body_")):
            continue
        for field, prop in model.get("properties", {}).items():
            if "description" not in prop and "$ref" not in prop and "allOf" not in prop:
                undocumented.append(f"{name}.{field}")
    assert not undocumented, undocumented
    job_schema = schema["components"]["schemas"]["JobPublic"]
    assert job_schema.get("examples")
    assert "bearer" in json.dumps(schema["components"]["securitySchemes"]).lower()
