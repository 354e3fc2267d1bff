"""The job spec as uploaded: JSON text checked into a :class:`JobSpec`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from search.spec import JobSpec
from service.uploads._errors import UploadError

__all__ = ["MAX_SPEC_BYTES", "validate_spec_json"]

MAX_SPEC_BYTES = 256 * 1024
"""Largest spec text accepted; a real one is well under a kilobyte."""


def validate_spec_json(text: str | bytes) -> JobSpec:
    """Return the :class:`JobSpec` the JSON ``text`` describes.

    Args:
        text: the spec form field, as text or UTF-8 bytes.

    Returns:
        The validated spec.

    Raises:
        UploadError: ``invalid_json`` when the text is not JSON (the message gives line
            and column), ``invalid_spec`` when it is not a valid spec (one line per
            problem: ``field.path: what is wrong``).
    """
    if len(text) > MAX_SPEC_BYTES:
        raise UploadError(
            "invalid_spec", f"the spec is {len(text):,} bytes; at most {MAX_SPEC_BYTES:,}"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UploadError(
                "invalid_json", f"the spec is not UTF-8 text (bad byte at offset {exc.start})"
            ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UploadError(
            "invalid_json",
            f"the spec is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        ) from None
    if not isinstance(data, dict):
        raise UploadError(
            "invalid_spec",
            f'the spec must be a JSON object such as {{"arch": ...}}, not {_json_type(data)}',
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise UploadError("invalid_spec", format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """Return one ``field.path: message`` line per problem in ``exc``.

    Problems with the spec as a whole (no field) are reported as ``spec: message``;
    pydantic's ``Value error, `` prefix is dropped.
    """
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "\n".join(lines)


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
