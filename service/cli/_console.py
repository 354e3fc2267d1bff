"""Terminal output for the CLI: rich on stderr for people, one JSON object on stdout."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

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
def progress_bar(
    description: str,
    total: float | None,
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    unit: str = "",
) -> Iterator[Any]:
    """Yield a progress display with one task (id 0), updated as rich's ``Progress`` is.

    In a terminal: a rich bar (n/N, status, elapsed, ETA). Anywhere else (a log file,
    CI, ``nohup``; or when ``stream`` is given): plain lines on stderr (or ``stream``),
    each with the count, the status, the elapsed time and an ETA; see
    :class:`ProgressLines` for how often. Nothing when ``enabled`` is false (``--json``).

    Args:
        description: what is progressing (``searching``).
        total: units to do, or None while unknown (``update(0, total=...)`` sets it).
        enabled: false shows nothing.
        stream: write lines there instead of drawing a bar.
        unit: what one unit is (``trial``): then every unit done gets a line ("trial 7/30
            done"); without it, lines come at every 10 % (fine-tune steps).
    """
    if not enabled:
        yield _NoProgress()
        return
    if stream is None and console.is_terminal:
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
        return
    lines = ProgressLines(description, total, stream=stream, unit=unit)
    try:
        yield lines
    finally:
        lines.finish()


class _NoProgress:
    def update(self, task_id: int, **kwargs: Any) -> None:
        """Ignore the update."""

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Ignore the advance."""


_now = time.monotonic  # a module attribute, so that tests can move the clock


class ProgressLines:
    """Progress as one plain line per notable update, for output that is not a terminal.

    A line is written at the first update, whenever the count reaches a new mark, and at
    the end. With a ``unit`` (``trial``) every unit done is a mark; without one (fine-tune
    steps, many and quick) every 10 % is. Between marks, an update still writes a line
    when the last one is ``heartbeat_s`` old, so a slow stretch shows it is alive. The ETA
    extrapolates the rate since the first update, so a resumed search does not count the
    trials it found already done.

    Not thread-safe: one caller updates it.
    """

    def __init__(
        self,
        description: str,
        total: float | None,
        *,
        stream: TextIO | None = None,
        unit: str = "",
        heartbeat_s: float = 30.0,
    ) -> None:
        self.description = description
        self.total = total
        self.completed = 0.0
        self.status = ""
        self.unit = unit
        self.heartbeat_s = heartbeat_s
        self._stream = stream
        self._started = _now()
        self._first: tuple[float, float] | None = None  # (time, completed) at first update
        self._last_line_at: float | None = None
        self._last_mark = -1
        self._ended = False
        self._unwritten = False  # an update since the last line

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        status: str | None = None,
        **fields: Any,
    ) -> None:
        """Record the new state (as ``Progress.update``) and write a line if it is due."""
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed = completed
        if advance is not None:
            self.completed += advance
        if description is not None:
            self.description = description
        if status is not None:
            self.status = status
        now = _now()
        if self._first is None:
            self._first = (now, self.completed)
        mark = self._mark()
        ended = self.total is not None and self.completed >= self.total
        heartbeat = self._last_line_at is not None and now - self._last_line_at >= self.heartbeat_s
        if self._ended:
            return
        if mark > self._last_mark or heartbeat or ended:
            self._last_mark = max(mark, self._last_mark)
            self._ended = ended
            self._write(now)
        else:
            self._unwritten = True

    def advance(self, task_id: int, advance: float = 1) -> None:
        """Add ``advance`` units done."""
        self.update(task_id, advance=advance)

    def finish(self) -> None:
        """Write the last state if it stopped short of the total with that state unsaid."""
        if self._unwritten and not self._ended:
            self._write(_now(), stopped=True)

    def line(self, now: float | None = None) -> str:
        """Return the line for the current state."""
        now = _now() if now is None else now
        parts = [f"{self.description}: {self._count()}"]
        if self.status:
            parts.append(self.status)
        parts.append(f"elapsed {duration(now - self._started)}")
        parts.append(f"ETA {self._eta(now)}")
        return ", ".join(parts)

    def _mark(self) -> int:
        if self.total is None or self.total <= 0:
            return 0 if self._last_mark < 0 else self._last_mark
        if self.unit:
            return int(self.completed)
        return int(10 * self.completed / self.total)

    def _count(self) -> str:
        done = f"{self.completed:g}"
        if self.total is None:
            return f"{self.unit} {done} done".strip()
        count = f"{done}/{self.total:g}"
        if self.unit:
            return f"{self.unit} {count} done"
        share = self.completed / self.total if self.total else 1.0
        return f"{count} ({share:.0%})"

    def _eta(self, now: float) -> str:
        if self.total is not None and self.completed >= self.total:
            return "0s"
        if self._first is None or self.total is None:
            return "unknown"
        since, done_then = self._first
        rate = (self.completed - done_then) / (now - since) if now > since else 0.0
        if rate <= 0:
            return "unknown until the first finishes" if self.unit else "unknown"
        return duration((self.total - self.completed) / rate)

    def _write(self, now: float, *, stopped: bool = False) -> None:
        self._last_line_at = now
        self._unwritten = False
        text = self.line(now) + (" (stopped)" if stopped else "")
        out = self._stream if self._stream is not None else sys.stderr
        out.write(text + "\n")
        out.flush()


def duration(seconds: float) -> str:
    """Return a duration as ``1h02m``, ``3m05s`` or ``42s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def macs_text(macs: float, baseline_macs: float | None) -> str:
    """Return MACs in the one unit the CLI shows: the count and its share of the
    unpruned model's (``20.46M MACs (50%)``), or the count alone without a baseline."""
    text = f"{human_count(macs)} MACs"
    return f"{text} ({macs / baseline_macs:.0%})" if baseline_macs else text


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
