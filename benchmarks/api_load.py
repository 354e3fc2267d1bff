"""Status polls under load: ``GET /v1/jobs/{id}`` while a worker trains.

Starts ``inferprune serve`` (embedded SQLite, one worker) on a free loopback port,
submits a job that keeps the worker training for the whole run, then

1. sends polls at a fixed rate (default 200 requests/s for 20 s, open loop: each
   request starts on schedule whether or not earlier ones finished) and records each
   request's latency from its scheduled start, and
2. measures the most polls per second the API serves with a few concurrent clients.

Traffic goes to 127.0.0.1 only and is bounded in count and time. The load generator
runs on the same two cores as the API and the worker, so it competes with them: the
numbers are an upper bound on what a client on another machine would see.

Run: ``.venv/bin/python benchmarks/api_load.py`` (writes results/api_load.json and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import closed_loop, open_loop  # noqa: E402
from _machine import machine_info  # noqa: E402

from service.client import wait_for_local_server  # noqa: E402

SPEC = {
    "arch": "resnet20_cifar",
    "dataset": "digits",
    "budget": {"flops": 0.5},
    "search": {"trials": 200, "seed": 0},
    "finetune": {"epochs_per_trial": 1, "final_epochs": 1},
}


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start ``inferprune serve`` with one worker; return the process, URL and token."""
    env = {**os.environ, "INFERPRUNE_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = open(data.parent / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            "0",
            "--workers",
            "1",
            "--data-dir",
            str(data),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    with wait_for_local_server(data, process) as client:
        return process, client.server, client.token


def _row(label: str, run: dict[str, Any], rate_key: str) -> str:
    """Return one markdown table row of a load run ("–" where it has no such figure)."""
    keys = ["requests", rate_key, "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors"]
    return "| " + " | ".join([label, *(str(run.get(k, "–")) for k in keys)]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="polls per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--pool", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop pollers")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        process, server, token = start_server(data)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            job = httpx.post(
                f"{server}/v1/jobs",
                headers=headers,
                timeout=300,
                data={"spec": json.dumps(SPEC)},
                files={"_": ("", b"")},
            ).json()
            url = f"{server}/v1/jobs/{job['id']}"
            deadline = time.monotonic() + 120
            while httpx.get(url, headers=headers).json()["status"] != "running":
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker never started the job")
                time.sleep(0.5)
            print("worker is training; measuring", file=sys.stderr)
            fixed = {
                "target_rps": args.rate,
                "seconds": args.seconds,
                **open_loop(url, token, args.rate, args.seconds, args.pool).summary(),
            }
            print(f"open loop: {fixed}", file=sys.stderr)
            peak = {
                "clients": args.clients,
                **closed_loop(url, token, args.clients, args.seconds / 2).summary(),
            }
            print(f"closed loop: {peak}", file=sys.stderr)
            status = httpx.get(url, headers=headers).json()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    result = {
        "machine": machine_info(),
        "open_loop": fixed,
        "closed_loop": peak,
        "worker_busy": status["status"] == "running",
        "trials_done_meanwhile": status["progress"]["trials_done"],
        "goal": {"rps": 200, "p99_ms": 50},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "api_load.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    verdict = (
        "met" if fixed["p99_ms"] < 50 and fixed["achieved_rps"] >= 0.95 * args.rate else "missed"
    )
    (args.out_dir / "api_load.md").write_text(
        f"""# API load: `GET /v1/jobs/{{id}}` while a worker trains

Machine: {m["cpu"]}, {m["cores"]} cores, Python {m["python"]}, {m["date"]}. One
`inferprune serve` process (uvicorn, embedded SQLite in WAL mode) with one worker
process training resnet20_cifar on digits (torch on one thread), and the load generator
(`benchmarks/_loadgen.py`: one asyncio process, raw keep-alive HTTP/1.1, {args.pool}
connections) share these cores. Every request is authenticated and reads the job, its
progress and best trial from the database.

Open loop: requests start on a fixed schedule whether or not earlier ones finished;
latency counts from the scheduled start, so waiting behind a slow response is included.
*service* is from writing the request to reading the last byte of the response.

| run | requests | rate (req/s) | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | errors |
|---|---:|---:|---:|---:|---:|---:|---:|
{_row(f"open loop, target {fixed['target_rps']:.0f}/s", fixed, "achieved_rps")}
{_row(f"closed loop, {peak['clients']} clients", peak, "achieved_rps")}

Open loop service time: p50 {fixed["service_p50_ms"]} ms, p99 {fixed["service_p99_ms"]} ms.
Goal: p99 under 50 ms at 200 requests/s — **{verdict}**. The worker kept training
throughout ({result["trials_done_meanwhile"]} trials finished during the runs).
"""
    )


if __name__ == "__main__":
    main()
