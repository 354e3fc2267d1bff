"""A teacher's logits for every sample of a training split, computed once and reused.

Distillation asks the teacher (the unpruned model) for soft targets at every training
step, and the teacher is many times larger than a pruned student: on a CPU that
forward pass costs more than the student's whole step. The training splits serve the
same samples without augmentation, and the teacher is frozen in eval mode, so its
logits for a sample never change: one pass over the split gives every candidate of a
search, at every rung, and the delivered model the same soft targets for a small
fraction of the cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.data._split import IndexedSource, batch_indices
from models.train._batches import module_device, on_device

__all__ = ["MAX_SOFT_TARGET_BYTES", "SoftTargets"]

logger = logging.getLogger(__name__)

MAX_SOFT_TARGET_BYTES = 512 * 2**20
"""Most bytes the logits of one split may take in memory (float32 on the CPU); a larger
split distills from the live teacher instead (:meth:`SoftTargets.of` returns None)."""


@dataclass(frozen=True)
class SoftTargets:
    """The logits a frozen teacher gives each sample of one split, by sample index.

    Passed to :func:`models.train.fine_tune` as its ``teacher`` for the same ``split``:
    its batches are the split's batches (same order, :func:`models.data.batch_indices`)
    with the teacher's logits for those samples beside them.

    Attributes:
        split: the split the logits belong to (fine-tuning on another one is refused).
        logits: (N, classes) float32 on the CPU, row i for sample i of ``split``.
        seconds: wall time of the teacher's pass.
    """

    split: IndexedSource
    logits: torch.Tensor
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.logits.dim() != 2 or len(self.logits) != len(self.split):
            raise ValueError(
                f"logits of shape {tuple(self.logits.shape)} for a split of "
                f"{len(self.split)} samples; expected ({len(self.split)}, classes)"
            )

    @classmethod
    def of(
        cls,
        teacher: nn.Module,
        split: object,
        *,
        batch_size: int = 256,
        max_bytes: int = MAX_SOFT_TARGET_BYTES,
    ) -> SoftTargets | None:
        """Run ``teacher`` once over ``split`` in eval mode and keep its logits, or return
        None where that cannot stand in for the live teacher: the split does not serve
        samples by index (:class:`~models.data.IndexedSource`), or its logits would take
        more than ``max_bytes`` (checked after the first batch, before the rest run).

        The teacher runs on its own device without autograd; its train/eval mode is
        restored afterwards.
        """
        if not isinstance(split, IndexedSource) or len(split) == 0:
            return None
        started = time.perf_counter()
        device = module_device(teacher)
        was_training = teacher.training
        teacher.eval()
        rows: list[torch.Tensor] = []
        try:
            with torch.no_grad():
                batches = on_device(split.batches(batch_size), device)
                for inputs, _ in batches:
                    logits = teacher(inputs)
                    if not rows and logits.shape[1] * 4 * len(split) > max_bytes:
                        logger.info(
                            "distilling from the live teacher: the logits of %d samples "
                            "would take more than %d MiB",
                            len(split),
                            max_bytes // 2**20,
                        )
                        return None
                    rows.append(logits.float().cpu())
        finally:
            teacher.train(was_training)
        seconds = time.perf_counter() - started
        logger.info("teacher logits for %d training samples in %.1f s", len(split), seconds)
        return cls(split, torch.cat(rows), seconds)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(inputs, labels, teacher logits)``: the split's own batches for these
        arguments, each with its samples' logits."""
        n = len(self.split)
        for index in batch_indices(n, batch_size, shuffle=shuffle, seed=seed, limit=limit):
            inputs, labels = self.split.batch_at(index)
            yield inputs, labels, self.logits[index]
