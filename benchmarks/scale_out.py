"""Scale-out: trials per second with 1–16 workers sharing one PostgreSQL, with a stub trial.

Each worker is a real :class:`service.worker.Worker` process (spawned) whose trial is a
stub: claim → Optuna ``ask`` → record the trial on the lease → sleep a fixed time →
``tell`` → release the lease, with the heartbeat thread running. So everything but the
training is real, and the gap between measured and ideal throughput (workers ÷ trial
time) is the coordination cost. Per-operation times (claim, ask, tell, release) are
recorded in every worker and reported as medians.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth); a fresh database is created and
dropped per run. Run: ``.venv/bin/python benchmarks/scale_out.py`` (writes
results/scale_out.json and .md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_info  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _stub_worker(url: str, trial_s: float, out: str, data_dir: str) -> None:
    """Run a worker whose trials sleep ``trial_s``; write its operation timings to ``out``."""
    import optuna

    from service.settings import Settings
    from service.store import (
        ClaimKind,
        JobStatus,
        TrialOutcome,
        finish_trial,
        release_finalize,
        set_lease_trial,
    )
    from service.worker import Worker

    timings: dict[str, list[float]] = {"claim": [], "ask": [], "tell": [], "release": []}

    class StubWorker(Worker):
        studies: dict[str, optuna.Study] = {}

        def _claim(self, attempts: int = 20) -> Any:
            started = time.perf_counter()
            claim = super()._claim(attempts)
            if claim is not None:
                timings["claim"].append(time.perf_counter() - started)
            return claim

        def _do(self, claim: Any) -> None:
            if claim.kind != ClaimKind.trial:
                with self.sessions.begin() as session:
                    release_finalize(session, claim.lease_id, status=JobStatus.succeeded)
                return
            study = self.studies.get(claim.study_name)
            if study is None:
                study = optuna.load_study(study_name=claim.study_name, storage=self.storage)
                self.studies[claim.study_name] = study
            t0 = time.perf_counter()
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            with self.sessions.begin() as session:
                set_lease_trial(session, claim.lease_id, trial.number)
            timings["ask"].append(time.perf_counter() - t0)
            time.sleep(trial_s)
            t1 = time.perf_counter()
            study.tell(trial, x)
            timings["tell"].append(time.perf_counter() - t1)
            t2 = time.perf_counter()
            with self.sessions.begin() as session:
                finish_trial(
                    session,
                    claim.lease_id,
                    state=TrialOutcome.complete,
                    seconds=trial_s,
                    trial_number=trial.number,
                    worker_id=self.id,
                    max_failed_trials=10,
                )
            timings["release"].append(time.perf_counter() - t2)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = Settings(
        db_url=url,
        data_dir=Path(data_dir),
        lease_seconds=30,
        heartbeat_seconds=1.0,
        poll_seconds=0.05,
    )
    worker = StubWorker(settings)
    import threading

    def stop_when_done() -> None:
        from sqlalchemy import select

        from service.store import Job

        while True:
            time.sleep(0.2)
            with worker.sessions() as session:
                statuses = set(session.scalars(select(Job.status)))
            if statuses and statuses <= {"succeeded", "failed", "cancelled"}:
                worker.stop()
                return

    threading.Thread(target=stop_when_done, daemon=True).start()
    worker.run()
    Path(out).write_text(json.dumps(timings))


def _database(name: str, create: bool) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(workers: int, trials_per_worker: int, trial_s: float) -> dict[str, Any]:
    """Run one configuration; return throughput and operation medians."""
    import optuna

    from service.store import (
        NewJob,
        create_job,
        create_token,
        make_engine,
        make_session_factory,
        upgrade_schema,
    )
    from service.worker import _inputs

    name = f"inferprune_scale_{uuid.uuid4().hex[:8]}"
    _database(name, create=True)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        engine = make_engine(url)
        upgrade_schema(engine)
        total = workers * trials_per_worker
        with make_session_factory(engine).begin() as session:
            create_token(session, "bench")  # a job belongs to a tenant that exists
            job = create_job(
                session,
                NewJob(tenant="bench", spec={"search": {"trials": total}}, trials_total=total),
            )
        optuna.create_study(study_name=job.study_name, storage=_inputs.optuna_storage(url))
        with tempfile.TemporaryDirectory() as tmp:
            context = multiprocessing.get_context("spawn")
            outs = [str(Path(tmp) / f"w{i}.json") for i in range(workers)]
            processes = [
                context.Process(
                    target=_stub_worker, args=(url, trial_s, outs[i], str(Path(tmp) / f"d{i}"))
                )
                for i in range(workers)
            ]
            for p in processes:
                p.start()
            # time from the first claim to the last release, read from the store
            for p in processes:
                p.join(timeout=600)
            timings: dict[str, list[float]] = {"claim": [], "ask": [], "tell": [], "release": []}
            for out in outs:
                if Path(out).exists():
                    for key, values in json.loads(Path(out).read_text()).items():
                        timings[key] += values
        from sqlalchemy import text

        with engine.connect() as conn:
            first, last, done = conn.execute(
                text(
                    "SELECT min(finished_at) - make_interval(secs => :t), max(finished_at), "
                    "count(*) FROM inferprune_trial_log WHERE state = 'complete'"
                ),
                {"t": trial_s},
            ).one()
        engine.dispose()
        wall = (last - first).total_seconds()
        ideal = workers / trial_s
        measured = done / wall
        return {
            "workers": workers,
            "trials": done,
            "trial_s": trial_s,
            "wall_s": round(wall, 2),
            "trials_per_s": round(measured, 3),
            "ideal_per_s": round(ideal, 3),
            "efficiency": round(measured / ideal, 3),
            "median_ms": {
                k: round(1000 * statistics.median(v), 1) if v else None for k, v in timings.items()
            },
            "p90_ms": {
                k: round(1000 * sorted(v)[int(0.9 * (len(v) - 1))], 1) if v else None
                for k, v in timings.items()
            },
        }
    finally:
        _database(name, create=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8,16", help="worker counts to run")
    parser.add_argument("--trials-per-worker", type=int, default=8)
    parser.add_argument("--trial-seconds", type=float, default=2.0)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    rows = []
    for count in (int(v) for v in args.workers.split(",")):
        row = run(count, args.trials_per_worker, args.trial_seconds)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    result = {"machine": machine_info(), "runs": rows, "goal": {"efficiency_at_16": 0.9}}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "scale_out.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    lines = [
        "# Scale-out: workers sharing one PostgreSQL (stub trials)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['date']}; PostgreSQL on loopback. "
        f"Each trial sleeps {args.trial_seconds:g} s between a real claim + Optuna ask and a "
        "real tell + lease release; heartbeats every second. Ideal throughput = workers ÷ "
        "trial time; efficiency = measured ÷ ideal, over the span from the first trial's "
        "start to the last trial's end.",
        "",
        "| workers | trials | trials/s | ideal/s | efficiency | claim ms (p50/p90) | "
        "ask ms | tell ms | release ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        med, p90 = r["median_ms"], r["p90_ms"]
        lines.append(
            f"| {r['workers']} | {r['trials']} | {r['trials_per_s']} | {r['ideal_per_s']} | "
            f"{r['efficiency']:.1%} | {med['claim']}/{p90['claim']} | {med['ask']}/{p90['ask']} "
            f"| {med['tell']}/{p90['tell']} | {med['release']}/{p90['release']} |"
        )
    last = rows[-1]
    verdict = "met" if last["efficiency"] >= 0.9 else "missed"
    lines += [
        "",
        f"Goal: at least 90 % of ideal at {last['workers']} workers — **{verdict}** "
        f"({last['efficiency']:.1%}).",
        "",
    ]
    (args.out_dir / "scale_out.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
