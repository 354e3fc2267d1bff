"""Weight-only criteria: L1/L2 norm, FPGM (geometric median), seeded random."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp

from models.criteria._base import Criterion, TorchPruningCriterion

__all__ = ["fpgm", "l1", "l2", "SeededRandom"]


def l1() -> Criterion:
    """Group L1 norm of the filters (Li et al. 2017), Torch-Pruning's MagnitudeImportance."""
    return TorchPruningCriterion("l1", tp.importance.MagnitudeImportance(p=1, normalizer=None))


def l2() -> Criterion:
    """Group L2 norm of the filters, Torch-Pruning's MagnitudeImportance with p=2."""
    return TorchPruningCriterion("l2", tp.importance.MagnitudeImportance(p=2, normalizer=None))


def fpgm() -> Criterion:
    """Distance to the other filters (He et al. 2019): near the geometric median = redundant."""
    return TorchPruningCriterion("fpgm", tp.importance.FPGMImportance(p=2, normalizer=None))


class SeededRandom(Criterion):
    """Uniform random scores from a seeded generator: the baseline every criterion must beat."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: Any) -> torch.Tensor:
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self._generator)
