"""Waiting for a local ``inferprune serve`` to come up, as the demo, tests and benchmarks do."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from service.client._client import Client
from service.client._credentials import CLIENT_FILE
from service.client._errors import ClientError

__all__ = ["wait_for_local_server"]


def wait_for_local_server(
    data_dir: Path,
    process: subprocess.Popen[bytes] | None = None,
    *,
    timeout: float = 120.0,
    interval: float = 0.3,
) -> Client:
    """Return a client of the server whose data folder is ``data_dir``, once it answers.

    ``inferprune serve`` writes ``client.json`` (server URL and token) into its data
    folder when it starts; this waits for that file and then for ``/healthz``.

    Args:
        data_dir: The server's ``--data-dir``.
        process: The server process, if this caller started it: its early exit is
            reported at once instead of after ``timeout``.
        timeout: Seconds to wait in all.
        interval: Seconds between checks.

    Raises:
        ClientError: ``server_exited`` if ``process`` ended, ``timeout`` if the server
            did not answer in time.
    """
    client_file = data_dir / CLIENT_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClientError(
                f"the server exited with code {process.returncode} before it answered",
                code="server_exited",
            )
        if client_file.exists():
            try:
                saved = json.loads(client_file.read_text())
            except ValueError:  # written as we read it
                saved = None
            if saved is not None:
                client = Client(saved["server"], saved["token"])
                try:
                    client.health()
                    return client
                except ClientError:
                    client.close()
        time.sleep(interval)
    raise ClientError(f"the server did not answer within {timeout:g} s", code="timeout")
