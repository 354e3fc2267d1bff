"""Real processes for fault tests: API servers, workers, a private PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

FAST_LEASES = {
    "INFERPRUNE_LEASE_SECONDS": "4",
    "INFERPRUNE_HEARTBEAT_SECONDS": "0.5",
    "INFERPRUNE_POLL_SECONDS": "0.2",
    "INFERPRUNE_TORCH_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Process:
    """A ``python -m service.cli ...`` child with its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAST_LEASES, **(env or {})},
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        self.popen.kill()
        self.popen.wait(timeout=30)

    def stop(self) -> int:
        """SIGINT and wait (then SIGKILL); return the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return int(self.popen.returncode)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_api(db: str, port: int, log: Path, data_dir: Path) -> Process:
    """Start an API-only server on ``port`` and wait for /healthz."""
    process = Process(
        ["serve", "--db", db, "--workers", "0", "--port", str(port), "--data-dir", str(data_dir)],
        log,
    )
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
        90,
        "the API to answer",
    )
    return process


def start_worker(db: str, log: Path, data_dir: Path) -> Process:
    return Process(["worker", "--db", db, "--data-dir", str(data_dir)], log)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb as the postgres user) on a free port, so a
    test can restart or stop it without touching the machine's server."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not binaries or os.geteuid() != 0 or shutil.which("runuser") is None:
            raise RuntimeError("needs root, runuser and PostgreSQL's server binaries")
        self.bin = Path(binaries[-1])
        self.root = Path(tempfile.mkdtemp(prefix="inferprune-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"]
        )
        self.start()
        self._as_postgres(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "inferprune"]
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/inferprune"

    def _as_postgres(self, args: list[str]) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / args[0]), *args[1:]]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-m",
                "fast",
                action,
            ]
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self) -> None:
        self._ctl("restart")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def read_client_file(data_dir: Path) -> tuple[str, str]:
    saved = json.loads((data_dir / "client.json").read_text())
    return saved["server"], saved["token"]
