"""Physical pruning: apply a :class:`Plan` and get a smaller dense model back."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from models.criteria import Calibration, Criterion, as_batches, make_criterion
from models.errors import ModelsError
from models.prune._depth import remove_blocks
from models.prune._graph import ChannelGroup, PruningGraph, build_pruning_graph, inside
from models.prune._plan import Plan, validate_plan
from models.prune._recurrent import has_recurrent_layers, prune_recurrent, recurrent_scores
from models.prune._tracing import PRUNABLE_ROOTS, group_name, trace_dependencies

__all__ = ["CALIBRATION_BATCHES", "apply_plan", "score_channels"]

logger = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8
"""Data-driven criteria look at no more than this many calibration batches."""

Scores = dict[str, torch.Tensor]


def _example(shape: Sequence[int]) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))


def _tp_groups(
    dg: tp.DependencyGraph, model: nn.Module, graph: PruningGraph, ignored: Iterable[str]
) -> dict[str, Any]:
    modules = dict(model.named_modules())
    name_of = {m: n for n, m in modules.items()}
    skip = [modules[n] for n in (graph.output_layer, *ignored) if n in modules]
    groups = dg.get_all_groups(ignored_layers=skip, root_module_types=PRUNABLE_ROOTS)
    return {group_name(dg, g, name_of): g for g in groups}


def _score(
    criterion: Criterion,
    model: nn.Module,
    groups: Mapping[str, Any],
    names: Iterable[str],
    calib: Calibration | None,
) -> Scores:
    batches = as_batches(calib, CALIBRATION_BATCHES)
    if criterion.needs_data and not batches:
        raise ModelsError(
            f"criterion {criterion.name!r} ranks channels by their activations or gradients "
            "and needs calibration data: pass a data set (--dataset), or pick a weight-only "
            "criterion such as l1"
        )
    criterion.prepare(model, batches)
    try:
        scores: Scores = {}
        fallback = make_criterion("l2")
        for name in names:
            imp = criterion(groups[name])
            if imp is None:  # e.g. a group no layer consumes: rank by weights instead
                imp = fallback(groups[name])
            if imp is None:
                raise ModelsError(f"criterion {criterion.name!r} cannot score group {name!r}")
            scores[name] = imp.detach().float().cpu()
        return scores
    finally:
        criterion.release(model)


def score_channels(
    model: nn.Module,
    criterion: str = "l1",
    calib: Calibration | None = None,
    *,
    input_shape: Sequence[int],
    graph: PruningGraph | None = None,
    seed: int = 0,
    round_to: int = 8,
    ignored_layers: Iterable[str] = (),
) -> Scores:
    """Return one importance score per channel of every group (higher = keep).

    The scores depend only on the unpruned model, so a search computes them once and
    passes them to every :func:`apply_plan` call.

    Args:
        model: the unpruned model (not modified; data criteria run it on ``calib``).
        criterion: a name from :data:`models.criteria.CRITERIA`.
        calib: calibration batches for data-driven criteria.
        input_shape: (C, H, W) of one input; (T, F) for a recurrent model, whose groups
            are hidden units cut by :mod:`models.prune._recurrent` (criteria
            :data:`RECURRENT_CRITERIA`).
        graph: the model's :class:`PruningGraph` if already built.
        seed: seeds the ``random`` criterion.
        round_to: channel multiple, used only when ``graph`` is None.
        ignored_layers: module paths never pruned, used only when ``graph`` is None.

    Raises:
        ModelsError: unknown criterion, or missing calibration data for a data criterion.
    """
    graph = graph or build_pruning_graph(
        model, input_shape, round_to=round_to, ignored_layers=ignored_layers
    )
    if has_recurrent_layers(model):
        return recurrent_scores(model, graph, criterion, seed=seed)
    work = copy.deepcopy(model).eval()
    dg = trace_dependencies(work, _example(graph.input_shape))
    groups = _tp_groups(dg, work, graph, ignored_layers)
    return _score(make_criterion(criterion, seed), work, groups, graph.names, calib)


def apply_plan(
    model: nn.Module,
    plan: Mapping[str, int],
    criterion: str = "l1",
    calib: Calibration | None = None,
    *,
    input_shape: Sequence[int],
    graph: PruningGraph | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    round_to: int = 8,
    ignored_layers: Iterable[str] = (),
) -> nn.Module:
    """Return a new, physically smaller model whose groups keep exactly ``plan``'s widths.

    The blocks ``plan`` removes (width 0) are replaced by ``nn.Identity`` first. Then,
    within each group left, the channels with the lowest ``criterion`` scores are
    removed, together with every coupled slice (BN, consumers' inputs, residual
    partners). The input model is not modified.

    Args:
        model: the unpruned model.
        plan: group name → channels kept; groups not named keep all their channels;
            a removable block (``graph.blocks``) named with 0 is removed.
        criterion: a name from :data:`models.criteria.CRITERIA`.
        calib: calibration batches, required by data-driven criteria.
        input_shape: (C, H, W) of one input; (T, F) for a recurrent model, whose groups
            are hidden units cut by :mod:`models.prune._recurrent` (criteria
            :data:`RECURRENT_CRITERIA`).
        graph: the model's :class:`PruningGraph` if already built (saves a trace).
        scores: precomputed :func:`score_channels` output; ``criterion`` is then unused.
        seed: seeds the ``random`` criterion.
        round_to: channel multiple, used only when ``graph`` is None.
        ignored_layers: module paths never pruned, used only when ``graph`` is None.

    Returns:
        The pruned model in eval mode, a deep copy of ``model``.

    Raises:
        PlanError: the plan names an unknown group or a width the group cannot have.
        ModelsError: missing calibration data for a data-driven criterion.
    """
    graph = graph or build_pruning_graph(
        model, input_shape, round_to=round_to, ignored_layers=ignored_layers
    )
    checked: Plan = validate_plan(plan, graph)
    if has_recurrent_layers(model):
        widths = {g.name: checked.width(g) for g in graph.groups}
        if scores is None:
            scores = recurrent_scores(model, graph, criterion, seed=seed)
        return prune_recurrent(model, graph, widths, scores)
    removed = graph.removed_blocks(checked)
    pruned = remove_blocks(model, removed).eval()  # a copy, even with nothing removed
    live = graph.live_groups(checked)
    to_cut = [g for g in live if checked.width(g) < g.channels]
    if not to_cut:
        return pruned
    dg = trace_dependencies(pruned, _example(graph.input_shape))
    groups = _live_tp_groups(_tp_groups(dg, pruned, graph, ignored_layers), to_cut, removed)
    if scores is None:
        scores = _score(
            make_criterion(criterion, seed), pruned, groups, [g.name for g in to_cut], calib
        )
    with torch.no_grad():
        for group in to_cut:
            _cut(dg, groups[group.name], group, checked.width(group), scores[group.name])
    _check_widths(dg, pruned, graph, checked)
    return pruned


def _live_tp_groups(
    found: dict[str, Any], wanted: Sequence[ChannelGroup], removed: Sequence[str]
) -> dict[str, Any]:
    """Return the traced groups of ``wanted`` by name. With blocks removed, a group is
    named by its first producer that is left (a residual group whose first producer
    was removed is found by the layers it still has)."""
    out = {}
    for group in wanted:
        if group.name in found:
            out[group.name] = found[group.name]
            continue
        layers = {name for name in group.layers if not inside(name, removed)}
        match = [tp_group for name, tp_group in found.items() if name in layers]
        if len(match) != 1:
            raise ModelsError(
                f"group {group.name!r} is not in this model; was it built differently?"
            )
        out[group.name] = match[0]
    return out


def _cut(
    dg: tp.DependencyGraph, tp_group: Any, group: ChannelGroup, width: int, scores: torch.Tensor
) -> None:
    if scores.numel() != group.channels:
        raise ModelsError(
            f"group {group.name!r}: {scores.numel()} scores for {group.channels} channels"
        )
    slice_len = group.channels // group.slices
    per_slot = scores.view(group.slices, slice_len).mean(0)
    remove_slots = (group.channels - width) // group.slices
    slots = torch.argsort(per_slot, stable=True)[:remove_slots]
    idxs = sorted(int(s) + k * slice_len for k in range(group.slices) for s in slots)
    root = tp_group[0].dep.target.module
    handler = tp_group[0].dep.handler
    cut = dg.get_pruning_group(root, handler, idxs)
    if not dg.check_pruning_group(cut):
        raise ModelsError(f"group {group.name!r} cannot lose {len(idxs)} channels")
    cut.prune()


def _check_widths(
    dg: tp.DependencyGraph, model: nn.Module, graph: PruningGraph, plan: Plan
) -> None:
    modules = dict(model.named_modules())
    for group in graph.live_groups(plan):
        got = dg.get_out_channels(modules[group.name])
        if got != plan.width(group):
            raise ModelsError(
                f"internal error: group {group.name!r} has {got} channels after pruning, "
                f"the plan asked for {plan.width(group)}"
            )
