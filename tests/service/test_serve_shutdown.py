"""``kill -TERM`` of a real ``inferprune serve``: every child stops with it, and the trials
in flight are handed back, not left leased to workers that no longer exist."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.client import ClientError, wait_for_local_server
from tests.service._processes import FAST_LEASES
from tests.service.conftest import job_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table in /proc"),
]


def _children(pid: int) -> set[int]:
    """Return every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has exited already
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def test_sigterm_stops_every_child_and_hands_back_the_trials_in_flight(
    tmp_path: Path, tiny_weights: bytes
) -> None:
    data = tmp_path / "data"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", "0", "--workers", "2"]
            + ["--data-dir", str(data)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAST_LEASES},
        )
        try:
            try:
                client = wait_for_local_server(data, server, timeout=90)
            except ClientError as exc:
                pytest.fail(f"{exc.message}: {log_path.read_text()[-3000:]}")
            # trials long enough that SIGTERM lands while both workers train
            spec = job_spec(search={"trials": 20}, finetune={"steps_per_trial": 20000})
            job = client.submit(spec, weights=tiny_weights)
            db = data / "inferprune.db"
            deadline = time.monotonic() + 120
            held: list[tuple[object, ...]] = []
            while time.monotonic() < deadline and len(held) < 2:
                held = _query(
                    db,
                    "SELECT worker_id FROM inferprune_leases "
                    "WHERE kind = 'trial' AND trial_number IS NOT NULL",
                )
                time.sleep(0.2)
            assert len(held) == 2, f"both workers should be training: {log_path.read_text()}"
            children = _children(server.pid)
            assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)

            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
            stopped_s = time.monotonic() - started
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            client.close()

    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), f"orphaned after SIGTERM: {_alive(children)}"
    assert code == 0, log_path.read_text()[-3000:]
    assert stopped_s < 30
    # no lease points at a worker that is gone; the job has nothing running
    assert _query(db, "SELECT count(*) FROM inferprune_leases") == [(0,)]
    ((running, finished, failed),) = _query(
        db,
        "SELECT trials_running, trials_finished, trials_failed FROM inferprune_jobs "
        f"WHERE id = '{job['id']}'",
    )
    assert running == 0 and failed == 0
    abandoned = _query(db, "SELECT count(*) FROM inferprune_trial_log WHERE state = 'abandoned'")
    assert abandoned == [(2,)]
    # the two abandoned trials' parameters wait in Optuna's queue for the next worker
    waiting = _query(db, "SELECT count(*) FROM trials WHERE state = 'WAITING'")
    assert waiting == [(2,)]
    assert _query(db, "SELECT count(*) FROM trials WHERE state = 'RUNNING'") == [(0,)]
    assert finished == 0
