"""Streamed answers: opening and closing them, saving them to a file, server-sent events."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from service.client._errors import _raise_for_error, _transport_error

if TYPE_CHECKING:
    from service.client._client import Client

__all__ = ["parse_sse"]


class _StreamContext:
    """``with`` block around a streamed response: opens it, checks the status, closes it."""

    def __init__(self, client: Client, request: httpx.Request) -> None:
        self._client = client
        self._request = request
        self._response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        try:
            self._response = self._client._http.send(self._request, stream=True)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self._client.server) from None
        if self._response.is_error:
            try:
                self._response.read()
            except httpx.TransportError as exc:
                raise _transport_error(exc, self._client.server) from None
            finally:
                self._response.close()
            _raise_for_error(self._response)
        return self._response

    def __exit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.close()


def _save_body(response: httpx.Response, destination: Path, default_name: str, server: str) -> Path:
    """Write a streamed body to a file; return the file's path.

    ``destination`` is the file, or an existing folder to put it in (named by the server,
    else ``default_name``). The bytes stream into a temporary file beside the
    destination, which is renamed into place only once complete.
    """
    if destination.is_dir():
        name = _attachment_name(response.headers.get("content-disposition"))
        destination = destination / (name or default_name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # closed by the `with` below
        dir=destination.parent,
        prefix=f".{destination.name}.",
        suffix=".part",
        delete=False,
    )
    partial = Path(handle.name)
    try:
        with handle:
            for chunk in _guarded(response.iter_bytes, server):
                handle.write(chunk)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return destination


def _attachment_name(disposition: str | None) -> str | None:
    if not disposition:
        return None
    match = re.search(r'filename="?([^";]+)"?', disposition)
    if match is None:
        return None
    name = Path(match.group(1)).name  # never a path the server chose
    return name if name not in ("", ".", "..") else None


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(event, data)`` from the lines of a ``text/event-stream`` body.

    Follows the server-sent events format: ``event:`` names the event (default
    ``message``), ``data:`` lines are joined with newlines, a blank line ends the event,
    lines starting with ``:`` are comments (keep-alives), ``id:`` and ``retry:`` are
    ignored, and an event without data is dropped.

    Args:
        lines: The body's lines, without line endings.

    Yields:
        The event name and its data parsed as JSON (a non-object, or text that is not
        JSON, comes as ``{"data": ...}``).
    """
    event = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", _event_data("\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:  # a stream that ends without the final blank line still delivers its event
        yield event or "message", _event_data("\n".join(data))


def _event_data(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"data": text}
    return value if isinstance(value, dict) else {"data": value}


def _guarded(chunks: Callable[[], Iterator[Any]], server: str) -> Iterator[Any]:
    """Iterate a streamed body, turning a dropped connection into a ClientError."""
    try:
        yield from chunks()
    except httpx.TransportError as exc:
        raise _transport_error(exc, server, streaming=True) from None
