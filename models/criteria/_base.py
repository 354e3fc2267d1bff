"""The contract every pruning criterion follows, and calibration batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor | None]
Calibration = Iterable[tuple[torch.Tensor, torch.Tensor]] | Iterable[torch.Tensor] | torch.Tensor


class Criterion(tp.importance.Importance):
    """A Torch-Pruning importance that may first look at calibration data.

    Contract: call :meth:`prepare` on the model the groups belong to (data-driven criteria
    record activations or gradients there), then call the criterion on each group to get
    one score per channel of the group's root (higher = more important), then
    :meth:`release`. Scores only rank channels within one group; they are not comparable
    across groups. A criterion object is not thread-safe and serves one model at a time.
    """

    name: str = ""
    needs_data: bool = False

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        """Collect what scoring needs from ``model`` on ``batches`` (no-op by default)."""

    def release(self, model: nn.Module) -> None:
        """Drop whatever :meth:`prepare` left on ``model`` (no-op by default)."""


class TorchPruningCriterion(Criterion):
    """One of Torch-Pruning's own importance classes under our name."""

    def __init__(self, name: str, importance: tp.importance.Importance) -> None:
        self.name = name
        self._importance = importance

    def __call__(self, group: Any) -> torch.Tensor:
        return self._importance(group)


def as_batches(calib: Calibration | None, limit: int | None = None) -> list[Batch]:
    """Return ``calib`` as a list of ``(inputs, labels-or-None)`` batches.

    Accepts one input tensor, an iterable of input tensors, or an iterable of
    ``(inputs, labels)`` pairs such as a DataLoader; at most ``limit`` batches are taken.
    """
    if calib is None:
        return []
    if isinstance(calib, torch.Tensor):
        return [(calib, None)]
    batches: list[Batch] = []
    for item in calib:
        if limit is not None and len(batches) >= limit:
            break
        if isinstance(item, torch.Tensor):
            batches.append((item, None))
        else:
            x, y = item[0], item[1]
            batches.append((x, y))
    return batches
