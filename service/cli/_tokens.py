"""``inferprune token create | list | revoke``: API tokens and tenants of a store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.markup import escape
from rich.table import Table

from service.cli._arguments import add_json_argument
from service.cli._console import console, print_json
from service.cli._server import _store_arguments, settings_from


def register(commands: Any) -> None:
    """Add the ``token`` command and its actions."""
    token = commands.add_parser(
        "token",
        help="manage API tokens",
        description="Create, list and revoke API tokens (only their hash is stored). A "
        "tenant exists while it has a token that is not revoked.",
    )
    token_commands = token.add_subparsers(metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create",
        help="create a token for a tenant (printed on the last line)",
        description="Create a bearer token for TENANT; a tenant sees only its own jobs.",
    )
    create.add_argument("--tenant", required=True, metavar="NAME")
    create.add_argument(
        "--agent",
        action="store_true",
        help="a token for `inferprune agent` on a target device: it can register the "
        "tenant's devices and measure their queue, and read nothing else (no jobs)",
    )
    _store_arguments(create)
    create.set_defaults(handler=run_token_create)

    listing = token_commands.add_parser(
        "list",
        help="list tokens: tenant, id, created, revoked (never the token)",
        description="List the store's tokens, oldest first. The id is random, not part "
        "of the token: pass it to `inferprune token revoke`.",
    )
    listing.add_argument("--tenant", metavar="NAME", help="only this tenant's tokens")
    _store_arguments(listing)
    add_json_argument(listing)
    listing.set_defaults(handler=run_token_list)

    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a token, or every token of a tenant (deleting it)",
        description="Revoke a token: from the next request on, every API process answers "
        "it with 401. With --tenant, revoke all of the tenant's tokens and cancel its "
        "queued and running jobs: the tenant no longer exists, and no job can be created "
        "for it (a new token for the same name brings it and its finished jobs back).",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "token",
        nargs="?",
        metavar="TOKEN_OR_ID",
        help="the token, its id from `inferprune token list`, or - to read the token "
        "from stdin (keeps it out of the shell history)",
    )
    which.add_argument("--tenant", metavar="NAME", help="delete this tenant")
    _store_arguments(revoke)
    add_json_argument(revoke)
    revoke.set_defaults(handler=run_token_revoke)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Any]:
    """Yield a session of the store named on the command line, committed on success."""
    from service.store import check_schema, make_engine, make_session_factory

    settings = settings_from(args)
    engine = make_engine(settings.database_url)
    try:
        check_schema(engine, hint="inferprune db upgrade")
        with make_session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def run_token_create(args: argparse.Namespace) -> int:
    """Create a token and print it last."""
    from service.errors import ServiceError
    from service.store import AGENT_SCOPE, FULL_SCOPE, create_token

    scope = AGENT_SCOPE if args.agent else FULL_SCOPE
    with _session(args) as session:
        try:
            token = create_token(session, args.tenant, scope)
        except ValueError as exc:  # the tenant's name
            raise ServiceError(str(exc), code="invalid_input") from exc
    kind = "device agent token" if args.agent else "token"
    console.print(f"{kind} for tenant [bold]{escape(args.tenant)}[/] (shown once; keep it secret):")
    sys.stdout.write(token + "\n")
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    """Print the tokens: a table, or one JSON object with ``--json``."""
    from service.store import list_tokens

    with _session(args) as session:
        tokens = list_tokens(session, args.tenant)
    if args.json:
        print_json({"tokens": [_token_json(info) for info in tokens]})
        return 0
    if not tokens:
        console.print("no tokens yet; create one with `inferprune token create --tenant NAME`")
        return 0
    table = Table()
    for name in ("tenant", "id", "scope", "created (UTC)", "revoked (UTC)"):
        table.add_column(name, no_wrap=name == "id")
    for info in tokens:
        table.add_row(
            escape(info.tenant),
            info.id,
            info.scope,
            _when(info.created_at),
            _when(info.revoked_at) if info.revoked_at else "[green]live[/]",
        )
    console.print(table)
    return 0


def run_token_revoke(args: argparse.Namespace) -> int:
    """Revoke one token, or delete a tenant; say what changed."""
    from service.store import delete_tenant, revoke_token

    if args.tenant is not None:
        with _session(args) as session:
            deleted = delete_tenant(session, args.tenant)
        payload = {
            "tenant": deleted.tenant,
            "revoked": [_token_json(info) for info in deleted.tokens],
            "cancelled_jobs": deleted.cancelled_jobs,
        }
        message = (
            f"deleted tenant [bold]{escape(deleted.tenant)}[/]: revoked "
            f"{_count(len(deleted.tokens), 'token')}, cancelled "
            f"{_count(len(deleted.cancelled_jobs), 'job')}"
        )
    else:
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        with _session(args) as session:
            info = revoke_token(session, token)
        payload = {"tenant": info.tenant, "revoked": [_token_json(info)], "cancelled_jobs": []}
        message = f"revoked token {info.id} of tenant [bold]{escape(info.tenant)}[/]"
    if args.json:
        print_json(payload)
    else:
        console.print(message)
    return 0


def _token_json(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "tenant": info.tenant,
        "scope": info.scope,
        "created_at": _when(info.created_at, iso=True),
        "revoked_at": _when(info.revoked_at, iso=True) if info.revoked_at else None,
    }


def _when(moment: Any, *, iso: bool = False) -> str:
    if iso:
        return str(moment.isoformat(timespec="seconds")) + "Z"
    return str(moment.strftime("%Y-%m-%d %H:%M:%S"))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
