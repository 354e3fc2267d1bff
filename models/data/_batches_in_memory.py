"""A user's own batches (a torch ``DataLoader`` or any iterable of ``(x, y)``) as a split.

The engine asks a split for batches of its own size, reshuffled by its own seed (so that
a candidate continued at a later rung sees the next batches, and two runs of a job see
the same ones); a user's loader does neither. So the batches are read once, on the CPU,
into one tensor of model inputs and one of labels, within a byte limit checked as they
arrive, and served from memory like the bundled data sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from models.data._split import Batch, batch_indices
from models.errors import DataError

__all__ = ["InputSplit", "collect_batches"]

DEFAULT_MAX_BYTES = 4 * 2**30
"""Most bytes of inputs one split may hold in memory unless the caller allows more."""


class InputSplit:
    """Model inputs and labels held in memory, served as :class:`BatchSource` batches.

    Unlike :class:`TensorSplit` the inputs are used as they are: the user's own
    preprocessing already made them what the model takes.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs = inputs
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def batch_at(self, index: torch.Tensor) -> Batch:
        """Return the samples at ``index`` as one ``(inputs, labels)`` batch."""
        return self.inputs[index], self.labels[index]

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` batches, shuffled with ``seed`` if asked (the last
        batch may be smaller; at most ``limit`` batches)."""
        for index in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, limit=limit):
            yield self.batch_at(index)

    def split(self, fraction: float, seed: int) -> tuple[InputSplit, InputSplit]:
        """Return a random ``1 - fraction`` / ``fraction`` partition of the samples."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = len(self) - max(1, round(len(self) * fraction))
        first, second = order[:cut], order[cut:]
        return (
            InputSplit(self.inputs[first], self.labels[first]),
            InputSplit(self.inputs[second], self.labels[second]),
        )


def collect_batches(
    batches: Iterable[Any], *, name: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> InputSplit:
    """Read every ``(inputs, labels)`` batch of ``batches`` into an :class:`InputSplit`.

    Args:
        batches: a torch ``DataLoader`` or any iterable of ``(inputs, labels)`` pairs
            (lists and tuples of two; a dict with ``"input"``/``"label"`` is not read).
        name: what the caller called it (``train``), for messages.
        max_bytes: most bytes the inputs may take (checked batch by batch).

    Raises:
        DataError: a batch is not a pair of tensors, the input shapes disagree, the
            labels are not integer class indices, the split is empty, or it is over
            ``max_bytes``.
    """
    inputs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    total = 0
    for number, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"{name}: batch {number} is not an (inputs, labels) pair")
        x, y = batch
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise DataError(f"{name}: batch {number} does not hold two tensors")
        if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
            raise DataError(
                f"{name}: batch {number} has labels of shape {tuple(y.shape)} and dtype "
                f"{y.dtype}; give one integer class index per input"
            )
        if inputs and x.shape[1:] != inputs[0].shape[1:]:
            raise DataError(
                f"{name}: batch {number} has inputs of shape {tuple(x.shape[1:])}, batch 0 "
                f"had {tuple(inputs[0].shape[1:])}"
            )
        total += x.numel() * 4
        if total > max_bytes:
            raise DataError(
                f"{name}: the batches take more than {max_bytes:,} bytes in memory; give a "
                "subset, or allow more with max_data_bytes"
            )
        inputs.append(x.detach().to("cpu", torch.float32))
        labels.append(y.detach().to("cpu", torch.int64))
    if not inputs:
        raise DataError(f"{name}: gave no batch")
    return InputSplit(torch.cat(inputs), torch.cat(labels))
