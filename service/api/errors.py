"""Every error becomes ``{"error": {"code", "message"}}`` with a fitting status.

The errors the lower layers raise on purpose (:class:`~models.errors.ModelsError`,
:class:`~search.errors.SearchError`) say what was wrong with the input, so they are
answered 422 with their message wherever a route lets one through. Messages are cut to
:data:`~service.uploads.MAX_MESSAGE_CHARS` and the input they repeat to
:data:`~service.uploads.MAX_ECHO_CHARS`; only errors nobody raised on purpose are 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import (
    DataError,
    ExportError,
    ModelsError,
    PlanError,
    TrainingDivergedError,
    UnknownArchitectureError,
    UnsafeFileError,
    WeightsError,
)
from search.errors import BudgetUnreachableError, NoFeasibleTrialError, SearchError, SpecError
from service.errors import ServiceError
from service.uploads import clip_message, echo, format_errors

__all__ = ["error_response", "install_error_handlers", "input_error_code"]

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}

# most specific first: the first class an error is an instance of gives its code
_INPUT_ERROR_CODES: tuple[tuple[type[Exception], str], ...] = (
    (UnknownArchitectureError, "unknown_architecture"),
    (UnsafeFileError, "unsafe_weights"),
    (WeightsError, "invalid_weights"),
    (PlanError, "invalid_plan"),
    (DataError, "invalid_dataset"),
    (TrainingDivergedError, "training_diverged"),
    (ExportError, "export_failed"),
    (ModelsError, "invalid_input"),
    (BudgetUnreachableError, "budget_unreachable"),
    (SpecError, "invalid_spec"),
    (NoFeasibleTrialError, "no_feasible_trial"),
    (SearchError, "invalid_input"),
)


def input_error_code(exc: ModelsError | SearchError) -> str:
    """Return the API's error code for a models / search error (``invalid_input`` if
    no more specific one applies)."""
    return next(code for kind, code in _INPUT_ERROR_CODES if isinstance(exc, kind))


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Return the API's error body (the message cut to a bounded length)."""
    return JSONResponse(
        {"error": {"code": code, "message": clip_message(message)}},
        status_code=status,
        headers=dict(headers) if headers else None,
    )


def _validation_message(exc: RequestValidationError) -> str:
    lines = format_errors(exc.errors(), skip=("body", "query"), whole="request")
    return lines.replace("\n", "; ") or "request: invalid"


def _route_paths(app: FastAPI) -> list[str]:
    """The documented paths (those of the OpenAPI schema, which FastAPI caches)."""
    try:
        return sorted(app.openapi().get("paths", {}))
    except Exception:  # a schema that fails to build must not turn a 404 into a 500
        logger.exception("cannot list the routes for a 404")
        return []


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, the models/search errors, validation and HTTP errors to JSON."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status >= 500:
            logger.error("%s: %s", exc.code, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(ModelsError)
    @app.exception_handler(SearchError)
    async def _input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelsError | SearchError)
        code = input_error_code(exc)
        logger.info("%s %s refused: %s: %s", request.method, request.url.path, code, exc)
        return error_response(422, code, str(exc) or type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = str(exc.detail)
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched
            paths = ", ".join(_route_paths(app)) or "its routes"
            message = (
                f"no route {request.method} {echo(request.url.path)}; this API serves "
                f"{paths} (documented at /docs)"
            )
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {echo(request.url.path)}" + (
                f"; use {allowed}" if allowed else ""
            )
        return error_response(exc.status_code, code, message, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500, "internal_error", "the server hit an unexpected error; it is logged"
        )
