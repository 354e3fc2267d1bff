"""Who may see what, how often, and in which state a job can be cancelled."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.settings import Settings
from service.store import Job, make_engine, make_session_factory
from tests.service.conftest import job_spec, make_token, run_worker, submit


def test_requests_without_a_valid_token_are_refused(api: TestClient) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
    ):
        response = api.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_a_tenant_sees_only_its_own_jobs(api: TestClient, settings: Settings) -> None:
    mine = submit(api).json()["id"]
    other = {"Authorization": f"Bearer {make_token(settings, 'globex')}"}
    for path in ("", "/trials", "/pareto", "/pareto.png", "/checkpoint", "/events"):
        response = api.get(f"/v1/jobs/{mine}{path}", headers=other)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert api.post(f"/v1/jobs/{mine}/cancel", headers=other).status_code == 404
    assert api.get("/v1/jobs", headers=other).json()["total"] == 0
    assert api.get(f"/v1/jobs/{mine}").json()["status"] == "queued"  # untouched


def test_same_idempotency_key_and_body_give_the_same_job(api: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = submit(api, headers=headers)
    again = submit(api, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert api.get("/v1/jobs").json()["total"] == 1


def test_same_idempotency_key_with_another_body_is_refused(api: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = submit(api, headers=headers)
    other = submit(api, job_spec(search={"trials": 4}), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert api.get("/v1/jobs").json()["total"] == 1
    assert api.get(f"/v1/jobs/{first.json()['id']}").status_code == 200


def test_trials_per_job_are_capped(api: TestClient) -> None:
    response = submit(api, job_spec(search={"trials": 51}))
    assert response.status_code == 422
    assert "at most 50" in response.json()["error"]["message"]


def test_active_jobs_per_tenant_are_capped(api: TestClient) -> None:
    for _ in range(3):
        assert submit(api).status_code == 202
    response = submit(api)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_jobs"


def test_cancel_a_queued_job_at_once(api: TestClient) -> None:
    job = submit(api).json()
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]


def test_cancel_a_running_job_keeps_finished_trials(api: TestClient, settings: Settings) -> None:
    job = submit(api, job_spec(search={"trials": 5})).json()
    assert run_worker(settings, max_units=2) == 2  # two trials done, three to go
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"  # no trial in flight: at once
    assert cancelled["progress"]["trials_done"] == 2
    assert run_worker(settings) == 0  # nothing left to claim
    trials = api.get(f"/v1/jobs/{job['id']}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["complete", "complete"]


def test_cancel_while_a_trial_runs_stops_after_it(api: TestClient, settings: Settings) -> None:
    job = submit(api, job_spec(search={"trials": 5})).json()
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    from service.store import claim_work, finish_trial

    with sessions.begin() as session:
        claim = claim_work(session, "w-test", 60)
        assert claim is not None
    response = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert response["status"] == "running" and response["cancel_requested"] is True
    with sessions.begin() as session:
        finish_trial(
            session,
            claim.lease_id,
            state="complete",
            seconds=1.0,
            trial_number=0,
            worker_id="w-test",
            max_failed_trials=10,
        )
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    engine.dispose()


def test_cancel_during_finalization_stops_it(api: TestClient, settings: Settings) -> None:
    job = submit(api, job_spec(search={"trials": 1})).json()
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.cancel_requested = True  # as if cancel arrived while finalizing
        row.status, row.trials_finished = "finalizing", 1
    engine.dispose()
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.json()["status"] == "finalizing" and cancelled.json()["cancel_requested"]


def test_cancel_a_finished_job_is_a_conflict(api: TestClient) -> None:
    job = submit(api).json()
    api.post(f"/v1/jobs/{job['id']}/cancel")
    response = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_checkpoint_before_success_says_not_ready(api: TestClient) -> None:
    job = submit(api).json()
    response = api.get(f"/v1/jobs/{job['id']}/checkpoint")
    assert response.status_code == 409
    assert "exists once it has succeeded" in response.json()["error"]["message"]
