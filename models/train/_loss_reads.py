"""Reading training losses back from the device without waiting for it every step."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

__all__ = ["ACCELERATOR_READ_EVERY", "LossReads", "NonFiniteLoss"]

ACCELERATOR_READ_EVERY = 25
"""Steps whose losses an accelerator keeps before they are read back in one transfer:
reading a loss waits for the device to finish the step, so reading every step would
stall the queue of kernels. On the CPU every loss is read at once (it costs nothing)."""


@dataclass(frozen=True)
class NonFiniteLoss:
    """The first step whose loss was NaN or infinite, and the learning rate it used."""

    step: int
    value: float
    lr: float


class LossReads:
    """The losses of a fine-tune's steps, read back every :attr:`every` steps.

    :meth:`add` keeps a step's loss tensor; every ``every`` steps (and always for the
    first step, so that progress shows a loss at once) the kept losses are read in one
    transfer and checked. Call :meth:`flush` after the last step. A NaN or infinite loss
    is reported, with its step, by the :meth:`add` or :meth:`flush` that reads it: on an
    accelerator up to ``every - 1`` steps after it was computed (the weights are unusable
    by then either way; the fine-tune raises).

    Attributes:
        every: steps per read.
        last: the latest loss read (NaN before the first read).
        recent: the last ``keep`` losses read, oldest first.
    """

    def __init__(self, device: torch.device, keep: int, every: int | None = None) -> None:
        if every is None:
            every = 1 if device.type == "cpu" else ACCELERATOR_READ_EVERY
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every
        self.last = math.nan
        self.recent: deque[float] = deque(maxlen=max(1, keep))
        self._kept: list[tuple[int, float, torch.Tensor]] = []

    def add(self, step: int, lr: float, loss: torch.Tensor) -> NonFiniteLoss | None:
        """Keep step ``step``'s ``loss`` (trained with ``lr``); read when it is time.

        Returns the first non-finite loss this read found, or None."""
        self._kept.append((step, lr, loss.detach()))
        if len(self._kept) >= self.every or math.isnan(self.last):
            return self.flush()
        return None

    def flush(self) -> NonFiniteLoss | None:
        """Read every kept loss now; return the first non-finite one, or None."""
        if not self._kept:
            return None
        kept, self._kept = self._kept, []
        values = torch.stack([loss.float() for _, _, loss in kept]).tolist()  # one transfer
        for (step, lr, _), value in zip(kept, values, strict=True):
            if not math.isfinite(value):
                return NonFiniteLoss(step, value, lr)
            self.recent.append(value)
            self.last = value
        return None
