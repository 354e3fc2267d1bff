"""Errors an upload check raises (a code and a message the uploader can act on), and how
a message may show what the uploader sent."""

from __future__ import annotations

from service.errors import ServiceError

__all__ = [
    "MAX_ECHO_CHARS",
    "MAX_MESSAGE_CHARS",
    "RequestTooLarge",
    "UploadError",
    "clip_message",
    "echo",
]

MAX_ECHO_CHARS = 80
"""Most characters of a client's input an error message repeats back."""
MAX_MESSAGE_CHARS = 2000
"""Longest error message the API sends; a message over it is cut (the last resort: every
echoed input is already cut by :func:`echo`)."""


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """Return ``value`` as an error message shows a client's input: its ``repr`` for
    strings, ``str`` otherwise, cut to ``limit`` characters with the full length said.

    A message that repeats a 10 kB input back would be 10 kB; this keeps the part a
    person recognises.
    """
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 1, 1)]}… ({len(text):,} characters)"


def clip_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return ``message`` cut to ``limit`` characters (saying how much was left out)."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}… ({len(message) - limit:,} more characters left out)"


class UploadError(ServiceError):
    """An upload that is refused; the API answers ``status`` with ``{"error": {code, message}}``.

    Codes: ``invalid_json``, ``invalid_spec``, ``spec_too_large``, ``model_too_large``,
    ``invalid_weights``, ``unsafe_weights``, ``weights_mismatch``, ``already_pruned``,
    ``invalid_dataset``, ``dataset_mismatch``, ``dataset_too_large``,
    ``dataset_unavailable``, ``budget_unreachable``, ``invalid_archive``,
    ``unsafe_archive``, ``archive_too_large`` (all 422) and ``too_large`` (413,
    :class:`RequestTooLarge`).
    """

    code = "invalid_upload"
    status = 422

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message, code=code, status=status)


class RequestTooLarge(UploadError):
    """A request body over the configured size limit (HTTP 413, code ``too_large``)."""

    status = 413

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message, status=413)
