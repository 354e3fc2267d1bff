"""``inferprune serve``, ``worker`` and ``db upgrade``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
from pathlib import Path
from types import FrameType
from typing import Any

from service.cli._arguments import add_device_argument, positive_int
from service.cli._console import console
from service.logs import configure_logging

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("inferprune-data")
CLIENT_FILE = "client.json"


def _log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or JSON objects with job/trial/worker ids "
        "(default: $INFERPRUNE_LOG_FORMAT or text)",
    )


def _store_arguments(parser: argparse.ArgumentParser, *, db_required: bool = False) -> None:
    parser.add_argument(
        "--db",
        required=db_required,
        metavar="URL",
        help="SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/db "
        "(default: SQLite in --data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="embedded database, saved client token and local caches "
        f"(default: $INFERPRUNE_DATA_DIR or ./{DEFAULT_DATA_DIR})",
    )


def register(commands: Any) -> None:
    """Add the server-side commands."""
    serve = commands.add_parser(
        "serve",
        help="run the API (and workers) on this machine",
        description="Run the HTTP API with N worker processes. With no --db, everything "
        "lives in --data-dir (SQLite in WAL mode): the database is created on first start, "
        "with a token that is printed and saved for the CLI. With --workers 0 only the API "
        "runs; start workers anywhere with `inferprune worker --db URL`.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=8000,
        metavar="P",
        help="port; 0 picks a free one (default: 8000)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes to start here (default: one per GPU with --device cuda, else 1)",
    )
    add_device_argument(serve, what="the workers train: cuda gives each its own GPU")
    _store_arguments(serve)
    _log_argument(serve)
    serve.set_defaults(handler=run_serve)

    worker = commands.add_parser(
        "worker",
        help="run a worker that takes trials from the store",
        description="Join the worker pool of a store: claim trials and finalizations, "
        "renew leases, reap workers that died. Needs nothing but the database URL (and a "
        "local folder for caches). Stops after the current unit on SIGTERM/Ctrl-C.",
    )
    _store_arguments(worker)
    add_device_argument(worker, what="this worker trains")
    worker.add_argument(
        "--threads",
        type=positive_int,
        metavar="T",
        help="torch intra-op threads (default: all cores)",
    )
    worker.set_defaults(handler=run_worker_command)

    db = commands.add_parser(
        "db", help="database maintenance", description="Database schema maintenance."
    )
    db_commands = db.add_subparsers(metavar="ACTION", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        help="create or migrate inferprune's tables to the current schema",
        description="Bring inferprune's tables (never Optuna's) to this version's schema.",
    )
    _store_arguments(upgrade)
    upgrade.set_defaults(handler=run_db_upgrade)


def settings_from(args: argparse.Namespace, **overrides: Any) -> Any:
    """Return :class:`Settings` from the environment with the command line on top."""
    from service.settings import Settings

    values: dict[str, Any] = dict(overrides)
    if getattr(args, "db", None):
        values["db_url"] = args.db
    if getattr(args, "log_format", None):
        values["log_format"] = args.log_format
    if getattr(args, "device", None):
        values["device"] = args.device
    if getattr(args, "data_dir", None):
        values["data_dir"] = args.data_dir
    elif "INFERPRUNE_DATA_DIR" not in os.environ:
        values["data_dir"] = DEFAULT_DATA_DIR
    return Settings(**values)


def run_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate the schema."""
    from service.store import make_engine, upgrade_schema

    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    before, after = upgrade_schema(engine)
    engine.dispose()
    if before == after:
        console.print(f"schema already at revision {after}")
    else:
        console.print(f"schema upgraded from {before or 'nothing'} to revision {after}")
    return 0


def run_worker_command(args: argparse.Namespace) -> int:
    """Run a worker in this process."""
    from service.worker import run_worker

    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(logging.INFO, settings.log_format)
    return run_worker(settings, threads=args.threads)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def prepare_embedded_store(settings: Any, server_url: str) -> str | None:
    """Create the embedded database and a first token if they do not exist yet.

    Returns:
        The new token, or None when the store already had one saved.
    """
    from service.store import (
        create_token,
        current_revision,
        make_engine,
        make_session_factory,
        upgrade_schema,
    )

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        if current_revision(engine) is None:  # a new store: creating it is not a migration
            upgrade_schema(engine)
        client_file = settings.data_dir / CLIENT_FILE
        saved = json.loads(client_file.read_text()) if client_file.exists() else None
        if saved and saved.get("token"):
            saved["server"] = server_url
            _write_private(client_file, saved)
            return None
        with make_session_factory(engine).begin() as session:
            token = create_token(session, "default")
        _write_private(client_file, {"server": server_url, "token": token})
        return token
    finally:
        engine.dispose()


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    tmp.replace(path)


class _Terminated(BaseException):
    """SIGTERM reached the server: stop like Ctrl-C does."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run_serve(args: argparse.Namespace) -> int:
    """Run uvicorn with the app, and a pool of workers beside it.

    SIGTERM stops the server as Ctrl-C does: uvicorn re-raises the signal it caught
    after its own shutdown, and without a handler of ours that would end the process
    on the spot, leaving the worker processes orphaned.
    """
    import uvicorn

    from service.api.app import create_app
    from service.store import check_schema, make_engine
    from service.worker import WorkerPool, worker_devices

    settings = settings_from(args)
    devices = worker_devices(args.device or settings.device, args.workers)
    configure_logging(logging.INFO if args.verbose == 0 else logging.DEBUG, settings.log_format)
    port = args.port or _free_port(args.host)
    server_url = f"http://{args.host}:{port}"
    if not settings.db_url:
        token = prepare_embedded_store(settings, server_url)
        if token:
            console.print(
                "created the embedded store in "
                f"[bold]{settings.data_dir.resolve()}[/] with a token for tenant "
                f"'default' (saved to {settings.data_dir / CLIENT_FILE}):"
            )
            console.print(token, highlight=False, soft_wrap=True)
    else:
        engine = make_engine(settings.database_url)
        try:
            check_schema(engine, hint=f"inferprune db upgrade --db {args.db}")
        finally:
            engine.dispose()
    signal.signal(signal.SIGTERM, _raise_terminated)
    pool = WorkerPool(settings, len(devices), devices=devices).start()
    try:
        placed = f" on {', '.join(sorted(set(devices)))}" if devices else ""
        console.print(
            f"serving on [bold]{server_url}[/] (docs at {server_url}/docs) with "
            f"{pool.count} worker(s){placed}; Ctrl-C stops"
        )
        uvicorn.run(create_app(settings), host=args.host, port=port, log_level="warning")
    except _Terminated:
        logger.info("stopped by SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut this short
        pool.stop()
    return 0
