"""Errors raised by :mod:`search`; every one derives from :class:`SearchError`."""

from __future__ import annotations

__all__ = ["BudgetUnreachableError", "NoFeasibleTrialError", "SearchError", "SpecError"]


class SearchError(Exception):
    """Root of every error :mod:`search` raises on purpose; the message is for users."""


class SpecError(SearchError, ValueError):
    """A job spec that cannot be run as written."""


class BudgetUnreachableError(SpecError):
    """A budget no plan can meet; the message says the smallest reachable cost."""


class NoFeasibleTrialError(SearchError):
    """The search finished without any trial that meets the budget."""
