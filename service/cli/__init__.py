"""The ``inferprune`` command line.

Every command lives in a module of its own; this one wires them into one parser, turns
the errors users can fix into one-line messages, and keeps heavy imports (torch) out
of ``--help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from rich.markup import escape

from service.cli import (
    _agent,
    _apply,
    _client_commands,
    _demo,
    _inspect,
    _prune,
    _sensitivity,
    _server,
    _submit,
    _tokens,
    _train,
)
from service.cli._console import console
from service.cli._flags import user_message
from service.logs import configure_logging

__all__ = ["build_parser", "main"]

_COMMAND_MODULES = (
    _demo,
    _inspect,
    _train,
    _apply,
    _prune,
    _sensitivity,
    _server,
    _tokens,
    _submit,
    _client_commands,
    _agent,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``inferprune`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="inferprune",
        description="Shrink convolutional networks to fit real devices: Bayesian search "
        "over per-layer filter counts, physical pruning, measured cost.",
        epilog=f"Run `inferprune demo` for a tour ({_demo.MEASURED_DURATION}); "
        "`inferprune COMMAND --help` for details of each command.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-vv for debug)"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in _COMMAND_MODULES:
        module.register(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from models.errors import ModelsError
    from service.errors import ServiceError

    errors: list[type[BaseException]] = [ModelsError, ServiceError]
    try:
        from search.errors import SearchError

        errors.append(SearchError)
    except ImportError:  # pragma: no cover - search not installed
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    configure_logging(level, os.environ.get("INFERPRUNE_LOG_FORMAT", "text"))
    if args.verbose < 2:  # third-party deprecation chatter is not the user's business
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        status: int = args.handler(args)
        return status
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            console.print(f"[bold red]error:[/] {escape(user_message(exc, args))}")
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
