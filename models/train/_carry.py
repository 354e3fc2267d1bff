"""Momentum that carries on across the pieces of a fine-tune trained in segments."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["OptimizerCarry"]


class OptimizerCarry:
    """Hands :func:`models.train.fine_tune` the same optimizer again while it trains the
    same parameters, so that a fine-tune trained in segments (a pruning schedule's) keeps
    its momentum from one segment to the next, as one call would.

    A segment whose trainable parameters are other objects (the model was cut physically,
    or re-parametrized) gets a fresh optimizer: momentum of the old shapes cannot apply.
    The carry holds the optimizer, and through it the parameters, until the next change,
    so the identities it compares cannot be reused meanwhile.
    """

    def __init__(self) -> None:
        self._params: tuple[int, ...] = ()
        self._optimizer: torch.optim.Optimizer | None = None
        self.fresh = 0
        """How many optimizers were made (one per run of unchanged parameters)."""

    def optimizer_for(
        self,
        params: Sequence[torch.nn.Parameter],
        make: Callable[[], torch.optim.Optimizer],
    ) -> torch.optim.Optimizer:
        """Return the optimizer of the last call if it trains exactly ``params``, else a
        new one from ``make()`` (which must train ``params``)."""
        key = tuple(id(p) for p in params)
        if self._optimizer is None or key != self._params:
            self._optimizer, self._params = make(), key
            self.fresh += 1
        return self._optimizer
