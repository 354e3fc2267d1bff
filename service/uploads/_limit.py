"""An ASGI middleware that refuses request bodies over a size limit while they stream in."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.uploads._errors import RequestTooLarge

__all__ = ["BodySizeLimit"]

LIMIT_SETTING = "INFERPRUNE_MAX_UPLOAD_BYTES"


def _mib(size: int) -> str:
    value = size / 2**20
    text = f"{value:.2f}".rstrip("0").rstrip(".") if value >= 0.01 else f"{value:.2g}"
    return f"{text} MiB"


def too_large_message(max_bytes: int) -> str:
    """Return the message of a 413: the limit in MiB and the setting that raises it."""
    return (
        f"the request body is larger than this server's limit of {_mib(max_bytes)} "
        f"({max_bytes:,} bytes); upload less, or ask the operator to raise "
        f"{LIMIT_SETTING}"
    )


class BodySizeLimit:
    """Answer 413 to POST requests on ``paths`` whose body exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before any byte is read.
    Bodies without one (chunked) or with a false one are counted as they pass through
    ``receive``; the ``receive`` that takes the count over raises
    :class:`RequestTooLarge` inside the application, so its body parsing fails and
    nothing partial is stored, and whatever response the application then tries to
    send is replaced by the 413 (if it had already started a response, the error
    propagates and the server drops the connection).

    The 413 body is ``{"error": {"code": "too_large", "message": ...}}``. Other methods,
    paths (matched exactly) and non-HTTP scopes pass through untouched. Stateless
    between requests; safe to share.

    Args:
        app: the ASGI application to wrap.
        max_bytes: the largest body accepted, in bytes.
        paths: request paths the limit applies to.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/v1/jobs",)
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be non-negative, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return
        await _LimitedRequest(self, receive, send).run(scope)


async def _send_413(send: Send, max_bytes: int) -> None:
    body = json.dumps(
        {"error": {"code": "too_large", "message": too_large_message(max_bytes)}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _LimitedRequest:
    """One request through :class:`BodySizeLimit`: counts its body, guards its response."""

    def __init__(self, limit: BodySizeLimit, receive: Receive, send: Send) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.received = 0
        self.exceeded = False
        self.app_started = False  # the application's own response went out
        self.refused = False  # our 413 went out

    async def receive(self) -> Message:
        if self.exceeded:
            raise RequestTooLarge(too_large_message(self.limit.max_bytes))
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.exceeded = True
                raise RequestTooLarge(too_large_message(self.limit.max_bytes))
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.app_started:
            # whatever the app answers to a body it could not read (often a 400 from the
            # form parser) becomes our 413
            if not self.refused:
                self.refused = True
                await _send_413(self._send, self.limit.max_bytes)
            return
        if message["type"] == "http.response.start":
            self.app_started = True
        await self._send(message)

    async def run(self, scope: Scope) -> None:
        try:
            await self.limit.app(scope, self.receive, self.send)
        except Exception:
            if not self.exceeded or self.app_started:
                raise
        if self.exceeded and not self.refused and not self.app_started:
            self.refused = True
            await _send_413(self._send, self.limit.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects malformed framing; count the bytes instead
    return None
