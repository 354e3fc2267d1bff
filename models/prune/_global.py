"""Widths chosen by Torch-Pruning's global magnitude pruner: a one-shot allocation."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

from models.prune._graph import PruningGraph
from models.prune._plan import Plan, validate_plan
from models.prune._recurrent import has_recurrent_layers, recurrent_scores

__all__ = ["global_magnitude_widths"]


def global_magnitude_widths(
    model: nn.Module, graph: PruningGraph, ratio: float, *, ignored_layers: Iterable[str] = ()
) -> Plan:
    """Return the widths Torch-Pruning's global L1-magnitude pruner keeps at ``ratio``.

    ``BasePruner(global_pruning=True, importance=MagnitudeImportance(p=1))`` ranks all
    channels of all groups against one threshold, so groups of small filters lose more:
    a non-uniform allocation at no training cost. A copy of ``model`` is pruned; only
    the widths are kept (which channels go is the criterion's business when the plan is
    applied).

    Args:
        model: the unpruned model (not changed).
        graph: its pruning graph (round_to, classifier, group names).
        ratio: Torch-Pruning's ``pruning_ratio``, in (0, 1).
        ignored_layers: module paths whose outputs are never pruned, besides the
            classifier.

    Returns:
        The plan; every group of ``graph`` is named.
    """
    if has_recurrent_layers(model):
        return _recurrent_widths(model, graph, ratio)
    pruned = copy.deepcopy(model).eval()
    modules = dict(pruned.named_modules())
    ignored = [modules[name] for name in (graph.output_layer, *ignored_layers)]
    example = torch.randn((1, *graph.input_shape), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about unwrapped parameters
        pruner = tp.pruner.BasePruner(
            pruned,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            global_pruning=True,
            pruning_ratio=ratio,
            round_to=graph.round_to,
            ignored_layers=ignored,
        )
        pruner.step()
    after = dict(pruned.named_modules())
    widths = {g.name: int(after[g.name].weight.shape[0]) for g in graph.groups}
    return validate_plan(widths, graph)


def _recurrent_widths(model: nn.Module, graph: PruningGraph, ratio: float) -> Plan:
    """Return the global magnitude widths of a recurrent model's hidden-unit groups.

    Torch-Pruning cannot trace stacked LSTM/GRU layers, so its global rule is applied
    here to the units' L1 scores (every gate row a unit owns): each group's scores divided
    by their mean (Torch-Pruning's default ``normalizer="mean"``), the ``ratio`` of all
    units with the lowest scores removed, each group's count then rounded down to its
    step as Torch-Pruning's ``round_to`` does (never below the group's minimum).
    """
    scores = recurrent_scores(model, graph, "l1")
    normalized = {name: s / s.mean().clamp_min(1e-12) for name, s in scores.items()}
    everything = torch.cat(list(normalized.values()))
    removed = min(int(len(everything) * ratio), len(everything) - 1)
    threshold = torch.kthvalue(everything, removed).values if removed >= 1 else None
    widths: dict[str, int] = {}
    for group in graph.groups:
        if threshold is None:
            kept = group.channels
        else:
            kept = int((normalized[group.name] > threshold).sum())
        kept -= kept % group.step if group.channels > group.step else 0
        widths[group.name] = max(group.min_channels, min(group.channels, kept))
    return validate_plan(widths, graph)
