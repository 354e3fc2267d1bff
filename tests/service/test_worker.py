"""Workers: fair claims, failures recorded and capped, lost workers reaped, artifacts kept
only for the front and the best."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

import search.lifecycle
import search.runner
from models.io import load_pruned
from search import JobSpec
from service.settings import Settings
from service.store import (
    REAPED_AFTER_RESULT,
    Artifact,
    Claim,
    Job,
    Lease,
    TrialLog,
    TrialOutcome,
    claim_work,
    has_open_work,
    make_engine,
    make_session_factory,
    reap_expired,
    set_lease_trial,
    utcnow,
)
from service.worker import Worker
from service.worker._inputs import LoadedJob
from tests.service.conftest import job_spec, run_worker, submit


def _sessions(settings: Settings):  # type: ignore[no-untyped-def]
    return make_session_factory(make_engine(settings.database_url))


def _claimed_by_a_dead_worker(
    api: TestClient, settings: Settings, spec: dict[str, Any], weights: bytes | None = None
) -> tuple[str, Worker, Claim, LoadedJob]:
    """Submit ``spec`` and claim its first trial as a worker about to die; return the
    job's id, a live worker to reap it, the dead worker's claim and its loaded job."""
    job = submit(api, spec, weights=weights).json()["id"]
    worker = Worker(settings)
    with _sessions(settings).begin() as session:
        claim = claim_work(session, "dead-worker", 60)
    assert claim is not None
    loaded = worker.cache.get(
        claim, JobSpec.model_validate(claim.spec), weights=weights, dataset=None, data_root=None
    )
    return job, worker, claim, loaded


def _dead_worker_on_a_trial(
    api: TestClient, settings: Settings, spec: dict[str, Any]
) -> tuple[str, Worker, LoadedJob, optuna.Trial]:
    """As :func:`_claimed_by_a_dead_worker`, the dead worker having asked Optuna for its
    trial, chosen the plan and put the trial's number on its lease."""
    job, worker, claim, loaded = _claimed_by_a_dead_worker(api, settings, spec)
    trial = loaded.study.ask()
    loaded.problem.space.suggest(trial)
    with _sessions(settings).begin() as session:
        set_lease_trial(session, claim.lease_id, trial.number)
    return job, worker, loaded, trial


def _reaped_and_finished(
    api: TestClient, settings: Settings, worker: Worker, job: str
) -> tuple[dict[str, Any], optuna.Study]:
    """Expire every lease (its worker is dead), let ``worker`` reap them and finish the
    job; return the job as the API shows it and its study."""
    with _sessions(settings).begin() as session:
        session.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
    worker.run(exit_when_idle=True)
    body = api.get(f"/v1/jobs/{job}").json()
    study = optuna.load_study(study_name=f"inferprune-job-{job}", storage=worker.storage)
    return body, study


def test_claims_share_workers_fairly_between_jobs(api: TestClient, settings: Settings) -> None:
    first = submit(api, job_spec(search={"trials": 4})).json()["id"]
    second = submit(api, job_spec(search={"trials": 4})).json()["id"]
    sessions = _sessions(settings)
    claimed = []
    with sessions.begin() as session:
        for worker in range(4):
            claim = claim_work(session, f"w{worker}", 60)
            assert claim is not None
            claimed.append(claim.job_id)
    assert claimed.count(first) == claimed.count(second) == 2


def test_claims_are_atomic_under_concurrency(api: TestClient, settings: Settings) -> None:
    job = submit(api, job_spec(search={"trials": 5})).json()["id"]
    sessions = _sessions(settings)
    got: list[str] = []
    lock = threading.Lock()

    def grab(index: int) -> None:
        while True:  # as workers do: retry while work exists but its row was locked
            with sessions.begin() as session:
                claim = claim_work(session, f"w{index}", 60)
                if claim is None and has_open_work(session):
                    continue
            if claim is not None:
                with lock:
                    got.append(claim.lease_id)
            return

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 5 == len(set(got))  # exactly the trials there were, no double claim
    with sessions() as session:
        row = session.get(Job, job)
        assert row is not None and row.trials_running == 5


def test_a_trial_that_raises_is_recorded_and_the_job_goes_on(
    api: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(api, job_spec(search={"trials": 2})).json()["id"]
    real = search.runner.run_trial
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated out-of-memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(search.runner, "run_trial", flaky)
    run_worker(settings)
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "succeeded" and body["progress"]["trials_failed"] == 1
    trials = api.get(f"/v1/jobs/{job}/trials").json()["items"]
    assert trials[0]["state"] == "fail" and "simulated out-of-memory" in trials[0]["error"]


def test_too_many_failures_fail_the_job(
    api: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(api, job_spec(search={"trials": 2})).json()["id"]

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("always broken")

    monkeypatch.setattr(search.runner, "run_trial", broken)
    run_worker(settings.model_copy(update={"max_failed_trials": 3}))
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "too_many_failures"
    assert "always broken" in body["error"]["message"]


def test_a_lost_worker_is_reaped_and_its_trial_retried(api: TestClient, settings: Settings) -> None:
    # a worker claims a trial, asks Optuna for it, and dies (its lease is never renewed)
    spec = job_spec(search={"trials": 2})
    job, worker, _, trial = _dead_worker_on_a_trial(api, settings, spec)
    body, study = _reaped_and_finished(api, settings, worker, job)
    assert body["status"] == "succeeded" and body["progress"]["trials_failed"] == 1
    lost = study.trials[trial.number]
    assert (
        lost.state == optuna.trial.TrialState.FAIL and "lease expired" in lost.user_attrs["error"]
    )
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert retried and retried[0].params == lost.params
    assert retried[0].state == optuna.trial.TrialState.COMPLETE


def test_a_worker_lost_after_telling_its_result_keeps_the_trial(
    api: TestClient, settings: Settings
) -> None:
    """The worker dies between the tell and releasing its lease (while storing the
    trial's weights): the reaper counts the trial as the finished trial it was, and it
    is not run again."""
    spec = job_spec(search={"trials": 2})
    job, worker, loaded, trial = _dead_worker_on_a_trial(api, settings, spec)
    loaded.study.tell(trial, 0.0)  # the result is in the study; the lease is never released
    body, study = _reaped_and_finished(api, settings, worker, job)
    sessions = _sessions(settings)

    assert body["status"] == "succeeded", body
    assert body["progress"]["trials_failed"] == 0
    assert body["progress"]["trials_done"] == body["progress"]["trials_total"] == 2
    assert [t.user_attrs.get("retry_of") for t in study.trials] == [None, None]
    assert study.trials[trial.number].state == optuna.trial.TrialState.COMPLETE
    with sessions() as session:
        logs = session.scalars(select(TrialLog).where(TrialLog.job_id == job)).all()
    lost = [log for log in logs if log.trial_number == trial.number]
    assert [(log.state, log.error) for log in lost] == [("complete", REAPED_AFTER_RESULT)]
    # its weights were never stored: the download says why, not "not on the front"
    assert body["best"]["trial"] != trial.number  # told 0.0: the live worker's trial wins
    response = api.get(f"/v1/jobs/{job}/checkpoint", params={"trial": trial.number})
    assert response.status_code == 404
    assert "lost with its worker" in response.json()["error"]["message"]


def test_a_reaped_trial_counted_back_makes_room_for_what_it_queued(
    api: TestClient, settings: Settings
) -> None:
    job = submit(api, job_spec(search={"trials": 2})).json()["id"]
    sessions = _sessions(settings)
    with sessions.begin() as session:
        lost = claim_work(session, "dead-worker", 60)
        alive = claim_work(session, "live-worker", 60)
    assert lost is not None and alive is not None
    with sessions.begin() as session:
        set_lease_trial(session, lost.lease_id, 0)
        session.execute(
            update(Lease)
            .where(Lease.id == lost.lease_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    # its result was told, and it had queued three continuations the job never counted
    with sessions.begin() as session:
        reaped = reap_expired(
            session, max_failed_trials=5, told=lambda study, number: (TrialOutcome.pruned, 3)
        )
    assert [(r.trial_number, r.result_recorded) for r in reaped] == [(0, True)]
    with sessions() as session:
        row = session.get(Job, job)
        assert row is not None
        assert (row.trials_finished, row.trials_failed, row.trials_running) == (1, 0, 1)
        assert row.trials_total == 1 + 1 + 3  # finished + running + queued
        (log,) = session.scalars(select(TrialLog).where(TrialLog.job_id == job)).all()
        assert (log.state, log.error) == ("pruned", REAPED_AFTER_RESULT)


def test_a_worker_lost_after_its_result_cannot_fail_a_job_at_its_failure_cap(
    api: TestClient, settings: Settings
) -> None:
    """One failed attempt is the cap: a lost worker whose result the study holds is no
    second failure, and the job goes on (it was failed before the reaper asked)."""
    spec = job_spec(search={"trials": 2})
    capped = settings.model_copy(update={"max_failed_trials": 1})
    job, worker, loaded, trial = _dead_worker_on_a_trial(api, capped, spec)
    loaded.study.tell(trial, 0.5)
    body, _ = _reaped_and_finished(api, capped, worker, job)

    assert body["status"] == "succeeded", body
    assert body["progress"]["trials_failed"] == 0


def test_only_the_front_and_the_best_keep_weights(api: TestClient, settings: Settings) -> None:
    # ten candidates: with six, all of them sometimes made the front (nothing to drop)
    spec = job_spec(search={"trials": 10}, objective="pareto", budget={"flops": None})
    del spec["latency"]  # accuracy against MACs only: a 2-D front
    job = submit(api, spec).json()["id"]
    run_worker(settings)
    pareto = api.get(f"/v1/jobs/{job}/pareto").json()
    front = {p["trial"] for p in pareto["points"]} | {pareto["best_trial"]}
    sessions = _sessions(settings)
    with sessions() as session:
        kept = set(
            session.scalars(
                select(Artifact.trial_number).where(
                    Artifact.job_id == job, Artifact.kind == "trial"
                )
            ).all()
        )
    trials = {t["number"] for t in api.get(f"/v1/jobs/{job}/trials").json()["items"]}
    dropped = trials - front
    values = {
        t["number"]: t.get("values") for t in api.get(f"/v1/jobs/{job}/trials").json()["items"]
    }
    assert len(trials) == 10 and dropped, f"every trial made the front, nothing to show: {values}"
    assert kept == front, "every front trial and the best keep weights; no other trial does"
    # what a user sees: each kept trial downloads and loads as its plan; a dropped one is gone
    plans = {p["trial"]: p["plan"] for p in pareto["points"]}
    for number in sorted(front):
        response = api.get(f"/v1/jobs/{job}/checkpoint", params={"trial": number})
        assert response.status_code == 200, (number, response.text)
        _, info = load_pruned(response.content)
        if number in plans:
            assert info.plan.to_dict() == plans[number], number
    gone = api.get(f"/v1/jobs/{job}/checkpoint", params={"trial": min(dropped)})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_cancel_during_finalization_cancels(
    api: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(api, job_spec(search={"trials": 1})).json()["id"]
    real = search.lifecycle.finalize

    def cancel_then_finalize(*args, **kwargs):  # type: ignore[no-untyped-def]
        api.post(f"/v1/jobs/{job}/cancel")
        return real(*args, **kwargs)

    monkeypatch.setattr(search.lifecycle, "finalize", cancel_then_finalize)
    run_worker(settings)
    assert api.get(f"/v1/jobs/{job}").json()["status"] == "cancelled"


def test_a_worker_stopped_during_finalization_hands_it_back(
    api: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit(api, job_spec(search={"trials": 1})).json()["id"]
    first = Worker(settings)
    real = search.lifecycle.finalize

    def stop_then_finalize(*args, **kwargs):  # type: ignore[no-untyped-def]
        first.stop()  # SIGTERM reached the worker mid-finalization
        return real(*args, **kwargs)

    monkeypatch.setattr(search.lifecycle, "finalize", stop_then_finalize)
    first.run(exit_when_idle=True)
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "running" and body["best"] is not None  # not cancelled
    monkeypatch.setattr(search.lifecycle, "finalize", real)
    run_worker(settings)  # the next worker finalizes it
    assert api.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"


def test_unusable_inputs_fail_the_job_with_the_reason(api: TestClient, settings: Settings) -> None:
    from service.store import NewJob, create_job

    # no MNIST files on workers (the API refuses such a job; an older server did not)
    with _sessions(settings).begin() as session:
        spec = job_spec(dataset="mnist")
        job = create_job(session, NewJob(tenant="acme", spec=spec, trials_total=3)).id
    run_worker(settings)
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "invalid_input"
    assert "MNIST" in body["error"]["message"]


def test_a_spec_past_the_limits_fails_its_job_not_the_worker(
    api: TestClient, settings: Settings
) -> None:
    """A spec the API would refuse (written by an older server, or by hand) reaches a
    worker: the job fails naming the limit, and the worker goes on to the next job."""
    from service.store import NewJob, create_job

    huge = job_spec(input_shape=[100_000, 32, 32])
    sessions = _sessions(settings)
    with sessions.begin() as session:
        bad = create_job(session, NewJob(tenant="acme", spec=huge, trials_total=3)).id
    good = submit(api, job_spec(search={"trials": 1})).json()["id"]
    run_worker(settings)
    body = api.get(f"/v1/jobs/{bad}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "invalid_input"
    assert "input_shape" in body["error"]["message"]
    assert api.get(f"/v1/jobs/{good}").json()["status"] == "succeeded"


def test_a_searching_job_shows_the_unpruned_model_beside_its_best(
    api: TestClient, settings: Settings
) -> None:
    job = submit(api, job_spec(search={"trials": 3})).json()["id"]
    run_worker(settings, max_units=1)
    body = api.get(f"/v1/jobs/{job}").json()
    assert body["status"] == "running" and body["best"] is not None
    assert body["baseline"]["macs"] > body["best"]["macs"]  # progress can give the share
    run_worker(settings)
    final = api.get(f"/v1/jobs/{job}").json()
    assert final["status"] == "succeeded" and final["baseline"]["test_accuracy"] is not None


class _Killed(Exception):
    """Stands for SIGKILL in the middle of a rung."""


def test_a_worker_killed_mid_rung_loses_that_rung_only(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    from models.train import steps_per_epoch
    from search import run_trial
    from search.promotion import promote_paused
    from search.rungs import rung_steps
    from service.worker._checkpoints import StoreCheckpoints

    spec = job_spec(search={"seed": 0, "compute_epochs": 6.0})
    del spec["search"]["trials"]  # compute_epochs decides
    job, worker, claim, loaded = _claimed_by_a_dead_worker(api, settings, spec, tiny_weights)
    sessions = _sessions(settings)
    problem, study = loaded.problem, loaded.study
    fidelity = problem.fidelity
    assert fidelity is not None
    ends, _ = rung_steps(problem, fidelity)

    def dies_in_the_second_rung() -> Callable[[], bool]:
        polls = {"n": 0}

        def poll() -> bool:  # once per training step of one trial
            polls["n"] += 1
            if polls["n"] > ends[0] + 2:
                raise _Killed
            return False

        return poll

    # the dead worker trains candidates through their first rung (saved to the store)
    # until one goes on and it dies in the second rung: no tell, no lease release, as
    # after SIGKILL
    store = StoreCheckpoints(sessions, worker.blobs, job)
    for _ in range(2 * fidelity.trials):
        trial = study.ask()
        with sessions.begin() as session:
            set_lease_trial(session, claim.lease_id, trial.number)
        try:
            result, _ = run_trial(
                problem, trial, should_stop=dies_in_the_second_rung(), checkpoints=store
            )
        except _Killed:
            break
        if result.values is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, list(result.values))
        promote_paused(problem.spec, fidelity, study)
    else:
        pytest.fail("no candidate went on to the second rung")
    body, study = _reaped_and_finished(api, settings, worker, job)

    assert body["status"] == "succeeded", body
    assert body["progress"]["trials_failed"] == 1
    lost = study.trials[trial.number]
    # it died in its candidate's second rung (a fresh candidate or a continuation)
    assert lost.state == optuna.trial.TrialState.FAIL
    assert len(lost.user_attrs["rung_accuracy"]) == 1
    candidate = int(lost.user_attrs.get("candidate", lost.number))
    resumed = [
        t
        for t in study.trials
        if t.number > trial.number and t.user_attrs.get("candidate") == candidate
    ]
    assert len(resumed) == 1, "the lost candidate is continued, not started again"
    first_rung = lost.user_attrs["rung_accuracy"][0]
    assert resumed[0].user_attrs["rung_accuracy"][0] == first_rung  # kept, not retrained
    per_epoch = steps_per_epoch(len(problem.data.train), 32)
    own = resumed[0].user_attrs["epochs_trained"]
    # it trained the lost (top) rung, and never the first again
    assert own == pytest.approx((ends[1] - ends[0]) / per_epoch, abs=1e-5)
    assert body["best"]["finalized"] is True


def test_a_second_job_on_the_same_weights_reuses_the_sensitivity_scan(
    api: TestClient, settings: Settings, tiny_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import search.warm_start

    scans: list[str] = []
    real_scan = search.warm_start.scan_sensitivity

    def counting_scan(problem, **kwargs):  # type: ignore[no-untyped-def]
        scans.append(problem.spec.budget.model_dump_json())
        return real_scan(problem, **kwargs)

    monkeypatch.setattr(search.warm_start, "scan_sensitivity", counting_scan)
    jobs = []
    for flops in (0.5, 0.3):  # another budget: the scan does not depend on it
        spec = job_spec(search={"seed": 0, "compute_epochs": 1.0}, budget={"flops": flops})
        del spec["search"]["trials"]
        jobs.append(submit(api, spec, weights=tiny_weights).json()["id"])
        run_worker(settings)
    assert len(scans) == 1, "the second job found the first job's scan in the store"
    storage = Worker(settings).storage
    for job in jobs:
        body = api.get(f"/v1/jobs/{job}").json()
        assert body["status"] == "succeeded", body["error"]
        study = optuna.load_study(study_name=f"inferprune-job-{job}", storage=storage)
        kinds = [t.user_attrs.get("warm_start_kind") for t in study.trials[:2]]
        assert kinds[0] == "uniform"
        assert kinds[1] in ("sensitivity", None)  # None: the scan's plan was the uniform one
