"""Errors raised by :mod:`service`; every one derives from :class:`ServiceError`."""

from __future__ import annotations

__all__ = ["ServiceError"]


class ServiceError(Exception):
    """Root of every error :mod:`service` raises on purpose.

    ``code`` is a short machine-readable slug (it becomes the API's ``error.code``);
    ``status`` the HTTP status the API answers with.
    """

    code = "service_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
