"""Errors an upload check raises: a code and a message the uploader can act on."""

from __future__ import annotations

from service.errors import ServiceError

__all__ = ["RequestTooLarge", "UploadError"]


class UploadError(ServiceError):
    """An upload that is refused; the API answers ``status`` with ``{"error": {code, message}}``.

    Codes: ``invalid_json``, ``invalid_spec``, ``invalid_weights``, ``unsafe_weights``,
    ``weights_mismatch``, ``already_pruned``, ``invalid_dataset``, ``dataset_mismatch``,
    ``budget_unreachable``, ``invalid_archive``, ``unsafe_archive``,
    ``archive_too_large`` (all 422) and ``too_large`` (413, :class:`RequestTooLarge`).
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
