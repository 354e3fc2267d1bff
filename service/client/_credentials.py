"""Where the client finds its server and token: arguments, environment, ``client.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from service.client._errors import ClientError

__all__ = ["CLIENT_FILE", "DEFAULT_DATA_DIR", "find_credentials"]

DEFAULT_DATA_DIR = Path("inferprune-data")
CLIENT_FILE = "client.json"


def find_credentials(
    server: str | None, token: str | None, data_dir: Path | None
) -> tuple[str, str]:
    """Return ``(server, token)`` from the arguments, the environment or ``client.json``.

    The lookup behind :meth:`Client.from_environment`.

    Args:
        server: Base URL of the server, if the caller gave one.
        token: API token, if the caller gave one.
        data_dir: Where to look for ``client.json`` (default: ``$INFERPRUNE_DATA_DIR``,
            else ``./inferprune-data``).

    Returns:
        The server and the token, both non-empty.

    Raises:
        ClientError: ``no_credentials`` if the server or the token is not found
            anywhere, or ``client.json`` cannot be read.
    """
    server = server or os.environ.get("INFERPRUNE_SERVER") or None
    token = token or os.environ.get("INFERPRUNE_TOKEN") or None
    if server is None or token is None:
        folder = data_dir or Path(os.environ.get("INFERPRUNE_DATA_DIR") or DEFAULT_DATA_DIR)
        saved = _read_client_file(folder / CLIENT_FILE)
        server = server or saved.get("server")
        token = token or saved.get("token")
    if not server or not token:
        missing = " and ".join(
            name for name, value in (("server", server), ("token", token)) if not value
        )
        raise ClientError(
            f"no {missing} to connect with: run `inferprune serve` (it prints a token and "
            f"saves it for this machine), or pass --server URL --token T (or set "
            f"INFERPRUNE_SERVER and INFERPRUNE_TOKEN)",
            code="no_credentials",
        )
    return str(server), str(token)


def _read_client_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(
            f"cannot read the saved server and token in {path}: {exc}; pass --server and "
            "--token, or run `inferprune serve` again to rewrite it",
            code="no_credentials",
        ) from None
    return data if isinstance(data, dict) else {}
