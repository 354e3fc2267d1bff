"""The client's one error, and how failed answers and dropped connections become it."""

from __future__ import annotations

import httpx

from service.errors import ServiceError

__all__ = ["ClientError"]


class ClientError(ServiceError):
    """The server answered with an error, or could not be reached.

    Attributes:
        status: The HTTP status of the answer; 0 when no answer arrived (the server is
            unreachable, or :meth:`Client.wait` gave up).
        code: The API's machine-readable ``error.code`` (``not_found``, ``invalid_spec``,
            ...), ``http_<status>`` for an answer without a JSON error body, or one of the
            client's own: ``unreachable``, ``timeout``, ``connection_lost``,
            ``no_credentials``, ``bad_response``.
        message: What went wrong, in words a user can act on.
    """

    code = "client_error"
    status = 0


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    status = response.status_code
    code, message = f"http_{status}", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
    elif isinstance(body, dict) and "detail" in body:  # a bare FastAPI/Starlette error
        message = str(body["detail"])
    if not message:
        text = " ".join(response.text.split())[:200]
        message = f"HTTP {status} {response.reason_phrase}".rstrip()
        if text:
            message += f": {text}"
    raise ClientError(message, code=code, status=status)


def _transport_error(
    exc: httpx.TransportError, server: str, *, streaming: bool = False
) -> ClientError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ClientError(
            f"cannot reach the inferprune server at {server}: {exc or type(exc).__name__} "
            "(is `inferprune serve` running?)",
            code="unreachable",
        )
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(
            f"the inferprune server at {server} did not answer in time ({type(exc).__name__})",
            code="timeout",
        )
    what = "the connection dropped while reading" if streaming else "the request failed"
    return ClientError(
        f"{what} from the inferprune server at {server}: {exc or type(exc).__name__}",
        code="connection_lost",
    )
