"""Errors raised by :mod:`models`; every one derives from :class:`ModelsError`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DataError",
    "ExportError",
    "ModelsError",
    "PlanError",
    "TrainingDivergedError",
    "UnknownArchitectureError",
    "UnsafeFileError",
    "WeightsError",
]


class ModelsError(Exception):
    """Root of every error :mod:`models` raises on purpose.

    The message is written for the person who gave the input: it says what was
    wrong and, where possible, what to do instead.

    Args:
        *args: the message (and nothing else, by convention).
        fields: the inputs the error is about, named as the job spec and the Python API
            name them (``input_shape``, ``data_root``), each written that way in the
            message. The CLI names the flag the user typed instead (``--input-shape``),
            so a message must not spell a field otherwise.
    """

    def __init__(self, *args: object, fields: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.fields: tuple[str, ...] = tuple(fields)


class UnknownArchitectureError(ModelsError, KeyError):
    """An architecture name that is not in the zoo."""

    def __init__(self, name: str, close: list[str]) -> None:
        self.name = name
        self.close = close
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown architecture {name!r}.{hint} `inferprune groups --list` lists them all."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsError(ModelsError):
    """Weights that cannot be read, or that do not fit the architecture."""


class UnsafeFileError(WeightsError):
    """A file that would run code when loaded (a pickle with a code payload)."""


class PlanError(ModelsError, ValueError):
    """A pruning plan that names unknown groups or asks for impossible widths."""


class DataError(ModelsError):
    """A data set that is missing, malformed or does not fit the model."""


class TrainingDivergedError(ModelsError):
    """The loss became NaN or infinite during training."""


class ExportError(ModelsError):
    """An export that failed or whose outputs disagree with torch."""
