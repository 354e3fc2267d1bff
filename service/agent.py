"""inferprune agent: times ONNX models on this device for an inferprune server.

Runs on the device a pruned model will ship to (a phone, a Raspberry Pi, a Jetson, an
edge box), so that a job's latency budget is checked where it matters. It registers
the device, long-polls the server for measurement requests, times each model as the
server's own ``measure_latency`` does (one fresh onnxruntime session per model, fixed
threads, sequential execution, all graph optimizations, a seeded input, warm-up runs,
then timed runs with the garbage collector paused; median, p10 and p90) and posts the
result. It reconnects with backoff when the server restarts or the network drops, and
stops cleanly on Ctrl-C or SIGTERM (what it held goes back to the queue).

This file is self-contained: the standard library, numpy, onnxruntime and httpx, and
nothing of inferprune (no torch). Where inferprune is installed, run
``inferprune agent``; elsewhere fetch this file from the server::

    curl -O http://SERVER:8000/v1/agent.py
    pip install onnxruntime numpy httpx
    python agent.py --server http://SERVER:8000 --token TOKEN --device pi4

The token should be an agent token (``inferprune token create --tenant NAME --agent``):
it can serve its tenant's devices and read nothing else.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import platform
import random
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from types import FrameType
from typing import Any

import httpx

__all__ = ["Agent", "AgentStopped", "device_spec", "main", "measure_onnx"]

logger = logging.getLogger("inferprune.agent")

PROTOCOL = 1
"""The agent API version this file speaks (sent on registration)."""
MAX_MODELS_BYTES = 1 << 30
"""Largest request payload the agent unpacks."""
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_BACKOFF_MAX_S = 30.0


class AgentStopped(Exception):
    """Raised in the main thread when the agent is asked to stop (SIGTERM)."""


class AgentRefused(Exception):
    """The server refuses this agent for good (bad token, wrong version): exit."""


def _onnxruntime() -> Any:
    """Return the onnxruntime module, imported on first use (``inferprune --help`` builds
    this module's parser and should not pay for it)."""
    import onnxruntime

    return onnxruntime


def device_spec(threads: int, providers: Sequence[str]) -> dict[str, Any]:
    """Return what the server records about this device."""
    ort = _onnxruntime()
    flags = _cpu_flags()
    return {
        "cpu": _cpu_name(),
        "nchwc_block": nchwc_block(flags, platform.machine()),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "asimd"))),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "providers": list(providers),
        "backend": "onnxruntime",
        "max_threads": threads,
        "protocol": PROTOCOL,
    }


def _cpu_flags() -> set[str]:
    """Return the CPU's feature flags (``flags`` on x86, ``Features`` on ARM), if known."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith(("flags", "features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def nchwc_block(flags: set[str], machine: str) -> int | None:
    """Return the channel block of onnxruntime's NCHWc convolution kernels on this CPU:
    16 with AVX-512F, 8 with AVX2 and FMA (its x86 kernels), None where unknown. The
    server's layer table pads channel counts to it, as onnxruntime does."""
    if machine.lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    if "avx512f" in flags:
        return 16
    if {"avx2", "fma"} <= flags:
        return 8
    return 1


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware", "processor\t: ")):
                    name = line.split(":", 1)[1].strip()
                    if name and not name.isdigit():
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_onnx(
    onnx_bytes: bytes,
    *,
    threads: int,
    batch_size: int,
    warmup: int,
    repeats: int,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> dict[str, float]:
    """Return the latency statistics (ms) of one forward pass of a serialized ONNX model.

    Mirrors the server's ``measure_latency`` for onnxruntime: one fresh session with
    ``threads`` intra-op threads, one inter-op thread, sequential execution and every
    graph optimization; a seeded normal input whose first dimension is ``batch_size``
    when symbolic; ``warmup`` untimed runs, then ``repeats`` runs timed one by one with
    ``perf_counter_ns`` while the garbage collector is paused.

    Raises:
        ValueError: the model has not exactly one input, or onnxruntime cannot load or
            run it (the message says which).
    """
    import numpy as np

    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(onnx_bytes, options, providers=list(providers))
    except Exception as exc:  # onnxruntime's own exception types are not exported
        raise ValueError(f"onnxruntime cannot load the model: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"the model has {len(inputs)} inputs; latency needs exactly one")
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inputs[0].shape]
    if shape and not isinstance(inputs[0].shape[0], int):
        shape[0] = batch_size
    feed = {inputs[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    try:
        session.run(None, feed)
    except Exception as exc:
        raise ValueError(f"onnxruntime cannot run the model on input {shape}: {exc}") from exc
    for _ in range(warmup):
        session.run(None, feed)
    durations = np.empty(repeats, dtype=np.float64)
    gc.collect(0)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            start = time.perf_counter_ns()
            session.run(None, feed)
            durations[i] = time.perf_counter_ns() - start
    finally:
        if enabled:
            gc.enable()
    durations /= 1e6
    p10, median, p90 = np.percentile(durations, [10, 50, 90])
    return {
        "median_ms": float(median),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "mean_ms": float(durations.mean()),
        "min_ms": float(durations.min()),
    }


def _models_in(payload: bytes, expected: int) -> list[bytes]:
    """Return the ONNX models of a request's zip, in member-name order."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        members = sorted(archive.infolist(), key=lambda m: m.filename)
        if len(members) != expected:
            raise ValueError(f"the request holds {len(members)} models, not {expected}")
        if sum(m.file_size for m in members) > MAX_MODELS_BYTES:
            raise ValueError("the request's models unpack to more than 1 GiB")
        return [archive.read(m) for m in members]


class Agent:
    """One agent process: register, wait for work, measure, answer; again.

    Args:
        server: the server's base URL.
        token: a bearer token of the tenant (an agent token, preferably).
        device: the device's name within the tenant.
        threads: the most intra-op threads a measurement may use here.
        providers: onnxruntime execution providers, in order of preference.
        client: an httpx client to use (tests); one is made otherwise.
    """

    def __init__(
        self,
        server: str,
        token: str,
        device: str,
        *,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        client: httpx.Client | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.device = device
        self.threads = threads or os.cpu_count() or 1
        self.providers = tuple(providers)
        self.agent_id: str | None = None
        self.measured = 0
        self._stop = threading.Event()
        self._client = client or httpx.Client(
            base_url=self.server,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"inferprune-agent/{PROTOCOL}",
            },
            # (connect, read, write, pool) as a tuple: httpx and httpx2 (which Starlette's
            # test client prefers when installed) both take it; neither takes the other's
            # Timeout object
            timeout=(30.0, None, 30.0, 30.0),
        )
        self._wait_s = 20.0
        self._lease_s = 30.0

    def stop(self) -> None:
        """Ask the loop to end after the current request (thread-safe)."""
        self._stop.set()

    def run(self, *, max_measurements: int | None = None) -> None:
        """Serve measurement requests until :meth:`stop` (or ``max_measurements``).

        Connection errors and server restarts are retried with exponential backoff
        (1 s doubling to 30 s, with jitter); an agent the server forgot registers again.

        Raises:
            AgentRefused: the server refuses the token or this agent's protocol.
        """
        delay = 1.0
        while not self._stop.is_set():
            if max_measurements is not None and self.measured >= max_measurements:
                return
            try:
                if self.agent_id is None:
                    self._register()
                task = self._next()
                delay = 1.0
                if task is not None:
                    self._handle(task)
            except (httpx.TransportError, _Retry) as exc:
                logger.warning("server unreachable (%s); retrying in %.0f s", exc, delay)
                self._stop.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, _BACKOFF_MAX_S)
            except _Forgotten:
                logger.info("the server does not know this agent any more: registering again")
                self.agent_id = None

    def close(self) -> None:
        """Tell the server this agent stops (its measurements go back to the queue)."""
        if self.agent_id is not None:
            try:
                self._client.post("/v1/agent/stop", json={"agent_id": self.agent_id}, timeout=5.0)
            except httpx.HTTPError:
                logger.debug("could not say goodbye to the server", exc_info=True)
        self._client.close()

    # -- protocol ------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        response = self._client.post(path, json=body, **kwargs)
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise AgentRefused(f"the server refuses this agent: {_message(response)}")
        if response.status_code == 404 and "agent_not_found" in response.text:
            raise _Forgotten
        if response.status_code in _RETRY_STATUSES:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 409:
            raise AgentRefused(f"HTTP {response.status_code}: {_message(response)}")

    def _register(self) -> None:
        body = {
            "device": self.device,
            "agent_id": self.agent_id,
            "spec": device_spec(self.threads, self.providers),
        }
        answer = self._post("/v1/agent/register", body).json()
        self.agent_id = answer["agent_id"]
        self._wait_s = float(answer.get("wait_s", self._wait_s))
        self._lease_s = float(answer.get("lease_s", self._lease_s))
        logger.info("registered as device %r (agent %s)", self.device, self.agent_id)

    def _next(self) -> dict[str, Any] | None:
        response = self._post(
            "/v1/agent/next",
            {"agent_id": self.agent_id, "wait_s": self._wait_s},
            timeout=(30.0, self._wait_s + 30.0, 30.0, 30.0),  # (connect, read, write, pool)
        )
        return None if response.status_code == 204 else dict(response.json())

    def _handle(self, task: dict[str, Any]) -> None:
        measurement = task["id"]
        renewing = threading.Event()
        keeper = threading.Thread(
            target=self._keep_lease, args=(measurement, renewing), name="lease", daemon=True
        )
        keeper.start()
        try:
            body = self._measure(task)
        finally:
            renewing.set()
            keeper.join(timeout=5.0)
        if body is None:
            logger.warning("measurement %s was handed to another agent meanwhile", measurement)
            return
        response = self._post(f"/v1/agent/measurements/{measurement}/result", body)
        if response.status_code == 409:
            logger.warning("measurement %s was handed to another agent meanwhile", measurement)
        self.measured += 1

    def _measure(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """Return the answer to post for ``task`` (None: it is no longer this agent's)."""
        settings = task["settings"]
        threads = min(int(settings.get("threads", 1)), self.threads)
        response = self._client.get(
            f"/v1/agent/measurements/{task['id']}/models", params={"agent_id": self.agent_id}
        )
        self._check(response)
        if response.status_code == 409:
            return None
        started = time.perf_counter()
        try:
            models = _models_in(response.content, int(task["models"]))
            latencies = [
                measure_onnx(
                    model,
                    threads=threads,
                    batch_size=int(settings.get("batch_size", 1)),
                    warmup=int(settings.get("warmup", 5)),
                    repeats=int(settings.get("repeats", 30)),
                    providers=self.providers,
                )
                for model in models
            ]
        except (ValueError, zipfile.BadZipFile) as exc:
            logger.error("measurement %s failed: %s", task["id"], exc)
            return {"agent_id": self.agent_id, "error": str(exc)}
        logger.info(
            "measured %d model(s) in %.1f s (first: %.3f ms)",
            len(latencies),
            time.perf_counter() - started,
            latencies[0]["median_ms"] if latencies else float("nan"),
        )
        return {"agent_id": self.agent_id, "latencies": latencies, "threads": threads}

    def _keep_lease(self, measurement: str, done: threading.Event) -> None:
        """Renew the hold on a measurement every third of the lease until ``done``."""
        while not done.wait(self._lease_s / 3):
            try:
                self._client.post(
                    f"/v1/agent/measurements/{measurement}/lease",
                    json={"agent_id": self.agent_id},
                    timeout=10.0,
                )
            except httpx.HTTPError:
                logger.debug("could not renew the lease", exc_info=True)


class _Retry(Exception):
    """A transient server answer (restarting, overloaded)."""


class _Forgotten(Exception):
    """The server does not know this agent's id."""


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:200]


def build_parser() -> argparse.ArgumentParser:
    """Return the agent's command-line parser (``inferprune agent`` adds the same)."""
    parser = argparse.ArgumentParser(
        prog="agent.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's options to ``parser``."""
    parser.add_argument(
        "--server",
        default=os.environ.get("INFERPRUNE_SERVER"),
        metavar="URL",
        help="the inferprune server (default: $INFERPRUNE_SERVER)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("INFERPRUNE_TOKEN"),
        metavar="T",
        help="a token of your tenant, ideally from `inferprune token create --tenant NAME "
        "--agent` (default: $INFERPRUNE_TOKEN)",
    )
    parser.add_argument(
        "--device",
        required=True,
        metavar="NAME",
        help="this device's name; jobs measure here with `latency.target` NAME "
        "(`--latency-target NAME`). Agents with the same name share the work",
    )
    parser.add_argument(
        "--backend",
        choices=("onnxruntime",),
        default="onnxruntime",
        help="the runtime that times models (onnxruntime)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="the most intra-op threads a measurement may use (default: every core); "
        "a job asks for latency.threads",
    )
    parser.add_argument(
        "--providers",
        nargs="+",
        default=["CPUExecutionProvider"],
        metavar="P",
        help="onnxruntime execution providers in order of preference "
        "(default: CPUExecutionProvider)",
    )


def run(args: argparse.Namespace) -> int:
    """Run an agent from parsed arguments until Ctrl-C or SIGTERM; return the exit status."""
    if not args.server or not args.token:
        print(
            "agent: give --server URL and --token T (or INFERPRUNE_SERVER / INFERPRUNE_TOKEN)",
            file=sys.stderr,
        )
        return 2
    available = _onnxruntime().get_available_providers()
    missing = [p for p in args.providers if p not in available]
    if missing:
        print(
            f"agent: --providers {' '.join(missing)}: this onnxruntime has only "
            f"{', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    if args.threads is not None and args.threads < 1:
        print("agent: --threads must be at least 1", file=sys.stderr)
        return 2
    agent = Agent(
        args.server, args.token, args.device, threads=args.threads, providers=args.providers
    )

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise AgentStopped

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    status = 0
    try:
        agent.run()
    except (KeyboardInterrupt, AgentStopped):
        logger.info("stopping")
    except AgentRefused as exc:
        print(f"agent: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        agent.close()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent as a script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
