"""Errors raised by :mod:`search`; every one derives from :class:`SearchError`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BudgetUnreachableError", "NoFeasibleTrialError", "SearchError", "SpecError"]


class SearchError(Exception):
    """Root of every error :mod:`search` raises on purpose; the message is for users.

    Args:
        *args: the message (and nothing else, by convention).
        fields: the job-spec fields the error is about, as dotted paths
            (``budget.flops``, ``pruning.round_to``), each written that way in the
            message. The API shows the message as it is; the CLI names the flag the user
            typed instead (``--flops``), so a message must not spell a field otherwise.
    """

    def __init__(self, *args: object, fields: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.fields: tuple[str, ...] = tuple(fields)


class SpecError(SearchError, ValueError):
    """A job spec that cannot be run as written."""


class BudgetUnreachableError(SpecError):
    """A budget no plan can meet; the message says the smallest reachable cost."""


class NoFeasibleTrialError(SearchError):
    """The search finished without any trial that meets the budget."""
