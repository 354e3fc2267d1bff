"""Terminal output for the CLI: rich on stderr for people, one JSON object on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)
"""Human-facing output goes to stderr so that ``--json`` stdout stays one object."""


def print_json(payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as one JSON object on stdout."""
    sys.stdout.write(json.dumps(payload, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool = True) -> Iterator[Any]:
    """Yield a rich ``Progress`` with one task (id 0): bar, n/N, elapsed and ETA.

    Disabled (a no-op object) when ``enabled`` is false or stderr is not a terminal.
    """
    if not enabled or not console.is_terminal:
        yield _NoProgress()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(description, total=total, status="")
        yield progress


class _NoProgress:
    def update(self, task_id: int, **kwargs: Any) -> None:
        """Ignore the update."""

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Ignore the advance."""


def human_count(value: float) -> str:
    """Return ``value`` with a k/M/G suffix (``1.23M``)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:.0f}"


def human_bytes(value: float) -> str:
    """Return a byte count as KiB/MiB."""
    for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= factor:
            return f"{value / factor:.2f} {suffix}"
    return f"{value:.0f} B"
