"""How many steps a fine-tune takes, and the cosine learning rate at each of them."""

from __future__ import annotations

import math

__all__ = ["cosine_lr", "steps_per_epoch", "total_steps"]


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Return the number of full batches in one pass over ``samples`` (at least one).

    The last, incomplete batch of an epoch is dropped, as is usual when training: it
    would be a noisier step and may hold a single sample, which train-mode BatchNorm
    cannot normalize. A split smaller than one batch gives one (smaller) batch.
    """
    return max(1, samples // batch_size)


def total_steps(epochs: float | None, steps: int | None, per_epoch: int) -> int:
    """Return the number of optimizer steps for ``epochs`` or ``steps`` (exactly one given).

    Fractional epochs are rounded to the nearest whole step, and are at least one step.

    Raises:
        ValueError: neither or both are given, or the one given is not positive.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return steps
    assert epochs is not None
    if not math.isfinite(epochs) or epochs <= 0:
        raise ValueError(f"epochs must be a positive number, got {epochs}")
    return max(1, math.floor(epochs * per_epoch + 0.5))


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    """Return the learning rate of 0-based ``step`` of ``total``: cosine decay to zero.

    The first step uses ``base_lr``; the rate then follows half a cosine, reaching zero
    where a step after the last one would be.
    """
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total))
