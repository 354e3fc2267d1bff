"""``pruning.sequence``: the job spec's hybrid pruning steps, and reading them from a file.

A sequence is an ordered list of steps, each ``{"granularity": "channel" | "kernel" |
"weight", "criterion": ..., "amount": ...}``, such as channel pruning by L1 then kernel
pruning by similarity (convolutional models), or hidden-unit pruning then AGP magnitude
pruning of the LSTM/GRU weights (recurrent models). The models here are torch-free
(the API validates specs without torch);
:func:`to_pruning_steps` turns them into :class:`models.prune.PruningStep` s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from models.names import (
    CRITERION_NAMES,
    KERNEL_CRITERION_NAMES,
    STEP_CRITERIA,
    WEIGHT_CRITERION_NAMES,
    Granularity,
)
from search.errors import SpecError

if TYPE_CHECKING:
    from models.prune import PruningStep

__all__ = [
    "MAX_SEQUENCE_STEPS",
    "PruningStepSpec",
    "read_sequence",
    "sequence_from_json",
    "to_pruning_steps",
]

MAX_SEQUENCE_STEPS = 16
"""The longest sequence a spec may give."""

SEQUENCE_FIELD = "pruning.sequence"


class PruningStepSpec(BaseModel):
    """One step of ``pruning.sequence``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    granularity: Granularity = Field(
        description="channel: whole channels (hidden units of a recurrent model) of every "
        "group (physical); kernel (convolutional models): single k×k kernels of every "
        "convolution (zeroed: a structured-sparse layer, whose dense MACs and latency stay "
        "unless a whole input channel goes); weight (recurrent models): single weights of "
        "every LSTM/GRU input-to-hidden and hidden-to-hidden matrix, smallest magnitude "
        "first (zeroed, unstructured: dense MACs and latency stay). A weight step is "
        "gradual (AGP, Zhu & Gupta): when a fine-tune follows it, the sparsity rises along "
        "the cubic curve over the first half of that fine-tune, from the sparsity the "
        "model already has to `amount`; with no fine-tune it applies at once. Zeroed "
        "weights stay zero through every later training."
    )
    criterion: str = Field(
        description=f"channel steps: any pruning criterion ({', '.join(CRITERION_NAMES)}); "
        f"kernel steps: {', '.join(KERNEL_CRITERION_NAMES)} (fpgm: similarity to the "
        f"other kernels of the same filter); weight steps: "
        f"{', '.join(WEIGHT_CRITERION_NAMES)} (magnitude)."
    )
    amount: float = Field(
        ge=0,
        lt=1,
        description="channel and kernel steps: the share of what is left to remove, of "
        "each group's channels, or of each convolution's kept kernels (each filter keeps "
        "at least one); weight steps: the sparsity to reach, the share of each LSTM/GRU "
        "weight matrix that is zero afterwards (biases and the head stay dense).",
    )

    @model_validator(mode="after")
    def _criterion_fits(self) -> PruningStepSpec:
        known = STEP_CRITERIA[self.granularity]
        if self.criterion not in known:
            raise ValueError(
                f"criterion {self.criterion!r} cannot rank {self.granularity}s; choose one "
                f"of {', '.join(known)}"
            )
        return self


_SEQUENCE = TypeAdapter(list[PruningStepSpec])


def sequence_from_json(data: Any, *, source: str = SEQUENCE_FIELD) -> tuple[PruningStepSpec, ...]:
    """Validate a sequence: a list of steps, or an object holding one under ``sequence``
    (or a job spec's ``pruning.sequence``).

    Args:
        data: parsed JSON.
        source: what to call the input in messages (a field or a file).

    Raises:
        SpecError: not a sequence of valid steps; the message names ``source`` and the
            step and key at fault, and the error's fields are ``pruning.sequence``.
    """
    if isinstance(data, dict) and isinstance(data.get("pruning"), dict):
        data = data["pruning"].get("sequence")
    if isinstance(data, dict) and "sequence" in data:
        data = data["sequence"]
    if not isinstance(data, list) or not data:
        raise SpecError(
            f"{source}: give a non-empty list of steps such as "
            '[{"granularity": "channel", "criterion": "l1", "amount": 0.3}, '
            '{"granularity": "kernel", "criterion": "fpgm", "amount": 0.5}]',
            fields=(SEQUENCE_FIELD,),
        )
    if len(data) > MAX_SEQUENCE_STEPS:
        raise SpecError(
            f"{source}: {len(data)} steps, at most {MAX_SEQUENCE_STEPS}", fields=(SEQUENCE_FIELD,)
        )
    try:
        return tuple(_SEQUENCE.validate_python(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        index, *keys = first["loc"]
        where = f"step {int(index) + 1}" + (f" {'.'.join(map(str, keys))}" if keys else "")
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SpecError(f"{source}: {where}: {message}", fields=(SEQUENCE_FIELD,)) from None


def read_sequence(path: str | Path, *, flag: str = "--sequence") -> tuple[PruningStepSpec, ...]:
    """Read and validate a sequence from a JSON file.

    Raises:
        SpecError: unreadable, not JSON, or not a valid sequence; the message names
            ``flag`` and the file.
    """
    source = f"{flag} {path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {source}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source} is not valid JSON: {exc}") from None
    return sequence_from_json(data, source=source)


def to_pruning_steps(steps: Sequence[PruningStepSpec]) -> list[PruningStep]:
    """Return the engine's steps (imports torch)."""
    from models.prune import PruningStep

    return [PruningStep(s.granularity, s.criterion, s.amount) for s in steps]
