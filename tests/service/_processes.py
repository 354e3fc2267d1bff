"""Real processes for fault tests: API servers, workers, a private PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

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


def start_api(db: str, port: int, log: Path, data_dir: Path, *, wait: bool = True) -> Process:
    """Start an API-only server on ``port`` and wait for /healthz (``wait=False``: return
    at once, so that other processes start while it imports; then call
    :func:`wait_for_api`)."""
    process = Process(
        ["serve", "--db", db, "--workers", "0", "--port", str(port), "--data-dir", str(data_dir)],
        log,
    )
    if wait:
        wait_for_api(port)
    return process


def wait_for_api(port: int) -> None:
    """Wait until the API on ``port`` answers /healthz."""
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
        90,
        "the API to answer",
    )


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


@dataclass
class Namespace:
    """A network namespace linked to the host by a veth pair (a /30 of its own)."""

    name: str
    host_ip: str
    ns_ip: str

    def exec(self, *command: str) -> list[str]:
        """Return ``command`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def can_make_namespaces() -> bool:
    """Whether this process can build network namespaces (root, iproute2, socat)."""
    return (
        os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("socat") is not None
    )


def _free_prefix() -> str:
    """Return ``10.a.b`` such that no interface here has an address in ``10.a.b.0/24``:
    drawn at random, so that test processes building namespaces at once, and the links a
    killed run left behind, do not give two links one address (a namespace's traffic
    then goes to the other and times out)."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    rng = random.SystemRandom()
    while True:
        prefix = f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}"
        if f" {prefix}." not in used:
            return prefix


@contextmanager
def network_namespaces(count: int) -> Iterator[list[Namespace]]:
    """Create ``count`` network namespaces, each reaching the host over its own veth link
    (skip without root, iproute2 and socat); delete them afterwards."""
    if not can_make_namespaces():
        pytest.skip("needs root, iproute2 and socat to build network namespaces")
    created: list[Namespace] = []
    tag = uuid.uuid4().hex[:6]
    try:
        for index in range(count):
            prefix = _free_prefix()
            ns = Namespace(f"ipw{tag}{index}", f"{prefix}.1", f"{prefix}.2")
            try:
                _run("ip", "netns", "add", ns.name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
            created.append(ns)
            host_if, ns_if = f"vh{tag}{index}", f"vn{tag}{index}"
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", ns.name)
            _run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            _run(*ns.exec("ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns_if))
            _run(*ns.exec("ip", "link", "set", ns_if, "up"))
            _run(*ns.exec("ip", "link", "set", "lo", "up"))
        yield created
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@contextmanager
def relay(host: str, port: int, to_port: int) -> Iterator[str]:
    """Forward ``host:port`` (a namespace's side of the host) to ``127.0.0.1:to_port``;
    yield ``host:port``."""
    process = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind={host},fork,reuseaddr", f"TCP:127.0.0.1:{to_port}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"{host}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
