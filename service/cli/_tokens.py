"""``inferprune token create``: API tokens of a store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli._console import console
from service.cli._server import _store_arguments, settings_from


def register(commands: Any) -> None:
    """Add the ``token`` command and its actions."""
    token = commands.add_parser(
        "token",
        help="manage API tokens",
        description="Create API tokens (only their hash is stored).",
    )
    token_commands = token.add_subparsers(metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create",
        help="create a token for a tenant (printed on the last line)",
        description="Create a bearer token for TENANT; a tenant sees only its own jobs.",
    )
    create.add_argument("--tenant", required=True, metavar="NAME")
    _store_arguments(create)
    create.set_defaults(handler=run_token_create)


def run_token_create(args: argparse.Namespace) -> int:
    """Create a token and print it last."""
    from service.store import check_schema, create_token, make_engine, make_session_factory

    settings = settings_from(args)
    engine = make_engine(settings.database_url)
    check_schema(engine, hint="inferprune db upgrade")
    with make_session_factory(engine).begin() as session:
        token = create_token(session, args.tenant)
    engine.dispose()
    console.print(f"token for tenant [bold]{args.tenant}[/] (shown once; keep it secret):")
    sys.stdout.write(token + "\n")
    return 0
