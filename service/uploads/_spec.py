"""The job spec as uploaded: JSON text checked into a :class:`JobSpec`.

Size and nesting depth are checked on the raw text before any JSON is parsed: a spec
nested a hundred thousand levels deep would otherwise exhaust the parser's recursion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from search.spec import JobSpec
from service.uploads._errors import UploadError, clip_message, echo

__all__ = [
    "MAX_SPEC_BYTES",
    "MAX_SPEC_DEPTH",
    "format_errors",
    "format_validation_error",
    "parse_spec_json",
    "validate_spec_json",
]

MAX_SPEC_BYTES = 64 * 1024
"""Largest spec accepted, in UTF-8 bytes; a real one is well under a kilobyte (a long
``pruning.ignored_layers`` list a few kilobytes)."""
MAX_SPEC_DEPTH = 16
"""Deepest nesting of objects and arrays accepted; a real spec nests three levels."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _nesting_depth(text: str, limit: int) -> int:
    """Return how deep ``text`` nests ``[`` and ``{`` (outside JSON strings), counting
    stops just past ``limit``; linear in the text, no parsing."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write a finite number")


def parse_spec_json(text: str | bytes) -> dict[str, Any]:
    """Return the JSON object of the spec text, after bounding its size and depth.

    Args:
        text: the spec form field, as text or UTF-8 bytes.

    Returns:
        The parsed object (not yet validated as a spec).

    Raises:
        UploadError: ``spec_too_large`` over :data:`MAX_SPEC_BYTES` bytes or
            :data:`MAX_SPEC_DEPTH` levels of nesting (checked before parsing);
            ``invalid_json`` for text that is not UTF-8 or not JSON (the message gives
            line and column), NaN / Infinity, or a number too long to read;
            ``invalid_spec`` for JSON that is not an object.
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise UploadError(
            "spec_too_large", f"the spec is {size:,} bytes; at most {MAX_SPEC_BYTES:,} are accepted"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UploadError(
                "invalid_json", f"the spec is not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
    depth = _nesting_depth(text, MAX_SPEC_DEPTH)
    if depth > MAX_SPEC_DEPTH:
        raise UploadError(
            "spec_too_large",
            f"the spec nests objects and arrays more than {MAX_SPEC_DEPTH} levels deep; "
            "a job spec needs three",
        )
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UploadError(
            "invalid_json",
            f"the spec is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN, or an integer of 4,300+ digits
        raise UploadError(
            "invalid_json", f"the spec is not valid JSON: {clip_message(str(exc), 200)}"
        ) from None
    if not isinstance(data, dict):
        raise UploadError(
            "invalid_spec",
            f'the spec must be a JSON object such as {{"arch": ...}}, not {_json_type(data)}',
        )
    return data


def validate_spec_json(text: str | bytes) -> JobSpec:
    """Return the :class:`JobSpec` the JSON ``text`` describes.

    Args:
        text: the spec form field, as text or UTF-8 bytes.

    Returns:
        The validated spec.

    Raises:
        UploadError: as :func:`parse_spec_json`, and ``invalid_spec`` when it is not a
            valid spec (one line per problem: ``field.path: what is wrong``).
    """
    data = parse_spec_json(text)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise UploadError("invalid_spec", format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """Return one ``field.path: message`` line per problem in ``exc`` (see
    :func:`format_errors`)."""
    return format_errors(exc.errors(include_url=False, include_input=False))


def format_errors(
    errors: Iterable[Mapping[str, Any]], *, skip: tuple[str, ...] = (), whole: str = "spec"
) -> str:
    """Return one ``field.path: message`` line per pydantic error in ``errors``.

    Problems with the input as a whole (no field) are reported as ``spec: message``;
    pydantic's ``Value error, `` prefix is dropped. The input itself is never shown;
    field names the client invented (an unknown key) are cut with :func:`echo` and
    messages to 300 characters, so no line repeats a long input back.

    Args:
        errors: pydantic's error dicts (``loc`` and ``msg`` are read).
        skip: location parts left out of the path (FastAPI's ``body``, ``query``, ...).
        whole: the name of the input as a whole, for problems without a field.
    """
    lines = []
    for error in errors:
        where = ".".join(_location(part) for part in error.get("loc", ()) if part not in skip)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where or whole}: {clip_message(message, 300)}")
    return "\n".join(lines)


def _location(part: object) -> str:
    text = str(part)
    return text if len(text) <= 40 and text.isprintable() else echo(text, 40)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
