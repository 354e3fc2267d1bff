"""Hybrid criterion: saliency ranks the channels, similarity removes the redundant ones."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from models.criteria._base import Criterion

__all__ = ["Hybrid"]


class Hybrid(Criterion):
    """Saliency times novelty.

    Channels are ranked by group L2 saliency; each channel's score is then discounted by
    its largest absolute cosine similarity to a *more* salient filter of the same layer:
    ``score_i = saliency_i * (1 - max_{j: s_j > s_i} |cos(w_i, w_j)|)``. The most salient
    filter keeps its full score; a weaker near-copy of a stronger filter scores near zero,
    so pruning removes redundancy before it removes weak but unique filters.
    """

    name = "hybrid"

    def __init__(self) -> None:
        self._saliency = tp.importance.MagnitudeImportance(p=2, normalizer=None)

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        saliency = self._saliency(group)
        if saliency is None:
            return None
        root = group[0].dep.target.module
        weight = _filters(root)
        if weight is None or weight.shape[0] != saliency.shape[0]:
            return saliency
        unit = nn.functional.normalize(weight.flatten(1), dim=1)
        similarity = (unit @ unit.T).abs()
        order = torch.argsort(saliency, descending=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        more_salient = rank.unsqueeze(0) < rank.unsqueeze(1)  # [i, j]: j ranks above i
        redundancy = torch.where(more_salient, similarity, torch.zeros_like(similarity))
        return saliency * (1.0 - redundancy.max(dim=1).values.clamp(max=1.0))


def _filters(layer: nn.Module) -> torch.Tensor | None:
    if isinstance(layer, nn.modules.conv._ConvNd):
        w = layer.weight
        return w.transpose(0, 1) if layer.transposed else w
    if isinstance(layer, nn.Linear):
        return layer.weight
    return None
