"""``prune --latency-target NAME``: measure on a server's registered device from the CLI.

The local search reaches the device's agents through the server's store (``--db`` or
``--data-dir``, as ``inferprune serve`` was started), as the tenant of the CLI's token
(``--token``, ``$INFERPRUNE_TOKEN``, or the one ``serve`` saved in the data folder).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from search.errors import SpecError


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--latency-target`` and the options that reach the server's store."""
    target = parser.add_argument_group(
        "target device (latency measured by `inferprune agent` on it, through a server's store)"
    )
    target.add_argument(
        "--latency-target",
        metavar="NAME",
        help="measure latency on this registered device instead of this machine",
    )
    target.add_argument(
        "--db", metavar="URL", help="the server's database (default: SQLite in --data-dir)"
    )
    target.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the server's data folder (default: $INFERPRUNE_DATA_DIR or ./inferprune-data)",
    )
    target.add_argument(
        "--token",
        metavar="T",
        help="your token (default: $INFERPRUNE_TOKEN, else the one saved in --data-dir)",
    )


def device_meter_factory(args: argparse.Namespace, target: str) -> Any:
    """Return a :data:`search.latency.MeterFactory` measuring on the tenant's ``target``.

    Raises:
        SpecError: no token, an unknown token, or no such device for its tenant.
    """
    from service.cli._server import settings_from
    from service.store import (
        BlobStore,
        authenticate,
        check_schema,
        device_registered,
        make_engine,
        make_session_factory,
    )
    from service.worker._remote_meter import DeviceMeters

    settings = settings_from(args)
    token = getattr(args, "token", None) or os.environ.get("INFERPRUNE_TOKEN")
    token = token or _saved_token(settings.data_dir)
    if not token:
        raise SpecError(
            "latency.target: measuring on a device needs your token (--token, "
            "INFERPRUNE_TOKEN, or the one `inferprune serve` saved in --data-dir)",
            fields=("latency.target",),
        )
    engine = make_engine(settings.database_url)
    check_schema(engine, hint="inferprune db upgrade")
    sessions = make_session_factory(engine)
    with sessions() as session:
        credential = authenticate(session, token)
        if credential is None:
            raise SpecError(
                "latency.target: the token is unknown or revoked in this store (--db / --data-dir)",
                fields=("latency.target",),
            )
        if not device_registered(session, credential.tenant, target):
            raise SpecError(
                f"latency.target: no device named {target!r} is registered for tenant "
                f"{credential.tenant!r} in {settings.database_url.split('?')[0]}; run "
                f"`inferprune agent --device {target}` on it first",
                fields=("latency.target",),
            )
    meters = DeviceMeters(
        sessions,
        BlobStore(settings.artifact_root),
        timeout_s=settings.device_timeout_s,
        live_seconds=settings.agent_live_seconds,
    )
    return meters.factory(credential.tenant, None)


def _saved_token(data_dir: Path) -> str | None:
    try:
        saved = json.loads((data_dir / "client.json").read_text())
    except (OSError, ValueError):
        return None
    token = saved.get("token") if isinstance(saved, dict) else None
    return str(token) if token else None
