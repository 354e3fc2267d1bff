"""A lean HTTP/1.1 load generator for loopback benchmarks (asyncio, keep-alive, no deps).

A Python HTTP client costs about a millisecond of CPU per request, which on two shared
cores is a large part of what it measures. This one writes a fixed GET request on a pool
of keep-alive connections and reads the response by ``Content-Length``: tens of
microseconds per request, so the numbers are the server's.

Open loop: request *n* is due at ``start + n / rate`` whether or not earlier ones
finished. Latency is counted from the due time, so time spent waiting for a free
connection (the server falling behind) is included rather than hidden (no coordinated
omission); ``service_ms`` is counted from the moment the request was written.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    """Latencies (ms) and errors of one run."""

    latency_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int]:
        """Return count, achieved rate and percentiles, rounded for a report."""
        values = np.array(self.latency_ms or [float("nan")])
        service = np.array(self.service_ms or [float("nan")])
        return {
            "requests": len(self.latency_ms),
            "achieved_rps": round(len(self.latency_ms) / self.seconds, 1),
            "errors": self.errors,
            "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p90_ms": round(float(np.percentile(values, 90)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2),
            "max_ms": round(float(values.max()), 2),
            "service_p50_ms": round(float(np.percentile(service, 50)), 2),
            "service_p99_ms": round(float(np.percentile(service, 99)), 2),
        }


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> int:
        """Send ``request``; return the status code after reading the whole response."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


def _request(url: str, token: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load only goes to loopback, not {host}")
    port = parts.port or 80
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    return host, port, request


async def _open_loop(url: str, token: str, rate: float, seconds: float, pool: int) -> LoadResult:
    host, port, request = _request(url, token)
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(pool):
        free.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
    result = LoadResult()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(due: float) -> None:
        connection = await free.get()
        sent = time.perf_counter()
        try:
            ok = await connection.get(request) == 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
            connection = _Connection(*await asyncio.open_connection(host, port))
        done = time.perf_counter()
        free.put_nowait(connection)
        result.latency_ms.append((loop.time() - due) * 1000)
        result.service_ms.append((done - sent) * 1000)
        result.errors += 0 if ok else 1

    tasks = []
    for n in range(int(rate * seconds)):
        due = start + n / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    result.seconds = loop.time() - start
    while not free.empty():
        free.get_nowait().writer.close()
    return result


async def _closed_loop(url: str, token: str, clients: int, seconds: float) -> LoadResult:
    host, port, request = _request(url, token)
    result = LoadResult()
    stop = time.perf_counter() + seconds

    async def client() -> None:
        connection = _Connection(*await asyncio.open_connection(host, port))
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            ok = await connection.get(request) == 200
            elapsed = (time.perf_counter() - sent) * 1000
            result.latency_ms.append(elapsed)
            result.service_ms.append(elapsed)
            result.errors += 0 if ok else 1
        connection.writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


def open_loop(url: str, token: str, rate: float, seconds: float, pool: int = 32) -> LoadResult:
    """Send GET ``url`` at ``rate`` per second for ``seconds`` over ``pool`` connections."""
    return asyncio.run(_open_loop(url, token, rate, seconds, pool))


def closed_loop(url: str, token: str, clients: int, seconds: float) -> LoadResult:
    """Run ``clients`` back-to-back pollers of GET ``url`` for ``seconds``."""
    return asyncio.run(_closed_loop(url, token, clients, seconds))
