"""Soft pruning: zero the channels a cut would remove, keeping the model's shape.

Soft filter pruning (He et al., 2018) prunes while training without a retraining phase:
at intervals the lowest-ranked filters are set to zero but stay in the model and keep
being trained (they may grow back and be chosen again), and the model is cut physically
only at the end. :func:`zero_channels` is one such interval's zeroing: it removes, in
place and by value only, every entry a physical cut to the same widths by the same
scores would remove (the producing layers' filters and biases, the BatchNorm scales and
shifts after them, the consuming layers' input columns, residual partners), so the
channels carry nothing. A physical cut by those scores afterwards leaves the function
unchanged (:func:`cut_by_scores`).

Which entries a cut removes is read off a copy whose every parameter holds its own
element indices, cut by :func:`models.prune.apply_plan` with the scores given (so the
copy's values rank nothing): what is left of each tensor are the indices kept.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.prune import PruningGraph, apply_plan, score_channels

if TYPE_CHECKING:
    from models.schedules._runner import ScheduleContext

__all__ = ["channel_scores", "cut_by_scores", "removed_entries", "zero_channels"]

_EXACT = 2**24
"""float32 holds every integer up to this exactly: the indices of larger tensors are
tagged one base-``_EXACT`` digit at a time."""

Scores = Mapping[str, torch.Tensor]


def channel_scores(
    model: nn.Module, graph: PruningGraph, criterion: str, context: ScheduleContext
) -> dict[str, torch.Tensor]:
    """Return ``criterion``'s score of every channel of ``model``'s groups (higher =
    kept), ``graph`` being ``model``'s own (as it is now)."""
    return dict(
        score_channels(
            model,
            criterion,
            list(context.calibration),
            input_shape=graph.input_shape,
            graph=graph,
            seed=context.seed,
            ignored_layers=context.ignored_layers,
        )
    )


def cut_by_scores(
    model: nn.Module,
    widths: Mapping[str, int],
    scores: Scores,
    graph: PruningGraph,
    context: ScheduleContext,
) -> nn.Module:
    """Return a physically smaller copy of ``model`` whose groups keep ``widths``, the
    channels with the lowest ``scores`` removed (``model`` is moved to the CPU, where
    the copy is)."""
    return apply_plan(
        model.cpu(),
        widths,
        input_shape=graph.input_shape,
        graph=graph,
        scores=scores,
        ignored_layers=context.ignored_layers,
    )


def removed_entries(
    model: nn.Module,
    widths: Mapping[str, int],
    scores: Scores,
    graph: PruningGraph,
    context: ScheduleContext,
) -> dict[str, torch.Tensor]:
    """Return, for every parameter of ``model`` a cut to ``widths`` by ``scores`` would
    shrink, a boolean mask of its shape that is true where the cut removes an entry.

    The indices are tagged in float32 digits of base :data:`_EXACT`: one cut of a tagged
    copy per digit the largest parameter needs (one, unless a tensor has more than
    2^24 elements).
    """
    shapes = {name: p.shape for name, p in model.named_parameters()}
    largest = max((p.numel() for p in model.parameters()), default=1)
    digits = 1
    while _EXACT**digits < largest:
        digits += 1
    kept: dict[str, torch.Tensor] = {}
    for digit in range(digits):
        tagged = copy.deepcopy(model).cpu().float()
        with torch.no_grad():
            for parameter in tagged.parameters():
                index = torch.arange(parameter.numel(), dtype=torch.int64)
                tags = (index // _EXACT**digit) % _EXACT
                parameter.copy_(tags.to(torch.float32).view_as(parameter))
        cut = cut_by_scores(tagged, widths, scores, graph, context)
        for name, parameter in cut.named_parameters():
            if parameter.shape != shapes[name]:
                value = parameter.detach().flatten().long() * _EXACT**digit
                kept[name] = kept[name] + value if name in kept else value
    removed: dict[str, torch.Tensor] = {}
    for name, indices in kept.items():
        mask = torch.ones(shapes[name].numel(), dtype=torch.bool)
        mask[indices] = False
        removed[name] = mask.view(shapes[name])
    return removed


def zero_channels(
    model: nn.Module,
    widths: Mapping[str, int],
    scores: Scores,
    graph: PruningGraph,
    context: ScheduleContext,
) -> None:
    """Set to zero, in place, every weight of ``model`` a cut to ``widths`` by ``scores``
    would remove (``graph`` is ``model``'s own); shapes do not change."""
    masks = removed_entries(model, widths, scores, graph, context)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name][mask.to(parameters[name].device)] = 0.0
