"""Logging for the server and workers: one line per event, with job and trial ids.

Code logs with ``logger.info(..., extra={"job": id, "trial": n, "worker": w})``. In
``text`` format those fields follow the message as ``key=value``; in ``json`` format each
line is one JSON object (``time``, ``level``, ``logger``, ``message`` and the fields),
ready for a log collector.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTEXT_FIELDS", "configure_logging", "log_context"]

CONTEXT_FIELDS = ("job", "trial", "worker", "tenant")
"""``extra`` keys that are printed with every line that has them."""

_context_var: ContextVar[dict[str, Any] | None] = ContextVar("inferprune_log", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (e.g. ``job=…, worker=…``) to every log line inside the block, also
    lines logged by code that knows nothing of jobs (the search, the models)."""
    current = _context_var.get() or {}
    token = _context_var.set({**current, **fields})
    try:
        yield
    finally:
        _context_var.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context_var.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message job=… trial=…``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{k}={v}" for k, v in _context(record).items())
        if fields:
            line += f" {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: int = logging.INFO, fmt: str = "text") -> None:
    """Send the process's logs to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
