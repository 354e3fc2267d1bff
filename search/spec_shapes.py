"""A job spec's ``input_shape``: (C, H, W) of one image or (T, F) of one sequence, within
the limits, and what to type when its rank is not the architecture's."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    WithJsonSchema,
)

from search.spec_limits import (
    MAX_INPUT_CHANNELS,
    MAX_INPUT_FEATURES,
    MAX_INPUT_SIDE,
    MAX_TIME_STEPS,
)

__all__ = [
    "Channels",
    "Features",
    "SEQUENCE_DATASET_SUFFIX",
    "Shape",
    "Side",
    "Steps",
    "arch_input_rank",
    "rank_advice",
]

Channels = Annotated[int, Field(ge=1, le=MAX_INPUT_CHANNELS)]
Side = Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]
Steps = Annotated[int, Field(ge=1, le=MAX_TIME_STEPS)]
Features = Annotated[int, Field(ge=1, le=MAX_INPUT_FEATURES)]
_SHAPES: dict[int, TypeAdapter[tuple[int, ...]]] = {
    3: TypeAdapter(tuple[Channels, Side, Side]),
    2: TypeAdapter(tuple[Steps, Features]),
}
"""The input shape of each rank, with its limits: (C, H, W) images, (T, F) sequences."""


def _input_shape(value: Any) -> tuple[int, ...]:
    """Return an ``input_shape`` as (C, H, W) or (T, F) within the limits, or raise.

    The rank picks the shape's type, so that a wrong size is reported at its place
    (``input_shape.1``), and a wrong rank as one message saying what to type, rather
    than pydantic's errors for each alternative of a union.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError("give a list of integers: [C, H, W] for images, [T, F] for sequences")
    if len(value) not in _SHAPES:
        raise ValueError(
            f"has {len(value)} numbers; give [C, H, W] for an image model (e.g. [3, 32, 32]) "
            "or [T, F] for a sequence model (e.g. [8, 8])"
        )
    return _SHAPES[len(value)].validate_python(value)


def _dims(*limits: int) -> dict[str, Any]:
    sizes = [{"type": "integer", "minimum": 1, "maximum": limit} for limit in limits]
    return {"type": "array", "prefixItems": sizes, "minItems": len(sizes), "maxItems": len(sizes)}


Shape = Annotated[
    tuple[int, ...],
    BeforeValidator(_input_shape),
    WithJsonSchema(
        {
            "anyOf": [
                _dims(MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, MAX_INPUT_SIDE),
                _dims(MAX_TIME_STEPS, MAX_INPUT_FEATURES),
            ],
            "description": "(C, H, W) of one image, or (T, F) of one sequence.",
        }
    ),
]


SEQUENCE_DATASET_SUFFIX = "_seq"
"""Built-in data sets named with this suffix feed sequences (T, F); the others images."""


def arch_input_rank(arch: str) -> int:
    """Return the input rank of a zoo architecture (imported here: the spec module loads
    without torch, and only validating an ``arch`` needs the zoo)."""
    from models.zoo import get_architecture

    return get_architecture(arch).input_rank


def rank_advice(arch: str, rank: int, shape: tuple[int, ...]) -> str:
    """Return what to type when ``shape`` has not the rank ``arch`` reads."""
    from models.zoo import get_architecture

    default = list(get_architecture(arch).default_input_shape)
    if rank == 2:
        return (
            f"{arch} reads sequences: give input_shape [T, F] (time steps, features) such "
            f"as {default}, not {list(shape)}"
        )
    return f"{arch} reads images: give input_shape [C, H, W] such as {default}, not {list(shape)}"
