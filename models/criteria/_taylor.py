"""First-order Taylor criterion (Molchanov et al. 2019) from gradients on calibration data."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from models.criteria._base import Batch, Criterion

__all__ = ["Taylor"]


class Taylor(Criterion):
    """|weight × gradient| summed per channel: the first-order estimate of the loss change
    ΔC when the channel is removed. Gradients come from cross-entropy on the calibration
    batches (the model's own predictions stand in for missing labels).
    """

    name = "taylor"
    needs_data = True

    def __init__(self) -> None:
        self._importance = tp.importance.GroupTaylorImportance(normalizer=None)

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        if not batches:
            raise ValueError("criterion 'taylor' needs calibration batches")
        was_training = model.training
        model.eval()  # gradients without disturbing the BN running statistics
        model.zero_grad(set_to_none=True)
        try:
            with torch.enable_grad():
                for x, y in batches:
                    logits = model(x)
                    target = y if y is not None else logits.argmax(1).detach()
                    F.cross_entropy(logits, target).backward()
        finally:
            model.train(was_training)

    def release(self, model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)

    def __call__(self, group: Any) -> torch.Tensor:
        return self._importance(group)
