"""Riding out database outages: retry store writes that must not be lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
from sqlalchemy.exc import DBAPIError, OperationalError

__all__ = ["DATABASE_ERRORS", "retry_database"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    DBAPIError,
    optuna.exceptions.StorageInternalError,
)
"""Errors that mean "the database is unreachable or restarting", not "the data is wrong"."""


def retry_database(
    action: Callable[[], T],
    *,
    what: str,
    give_up_after_s: float = 120.0,
    first_delay_s: float = 0.5,
    max_delay_s: float = 5.0,
) -> T:
    """Run ``action`` until it succeeds, waiting with exponential backoff while the
    database is unreachable (a restart, a failover); re-raise after ``give_up_after_s``.

    ``action`` must be safe to repeat: it runs in its own transaction, which a failure
    rolls back.
    """
    deadline = time.monotonic() + give_up_after_s
    delay = first_delay_s
    while True:
        try:
            return action()
        except DATABASE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "database unavailable while trying to %s (%s); retrying in %.1f s",
                what,
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
