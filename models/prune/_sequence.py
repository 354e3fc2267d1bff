"""Hybrid pruning: an ordered sequence of channel, kernel and weight steps.

Each :class:`PruningStep` removes a share of what is left, at one granularity, ranked by
one criterion: channel steps cut whole channels (or LSTM/GRU hidden units) physically
(:func:`apply_plan`), kernel steps zero single kernels (:func:`kernel_masks`), weight
steps zero single recurrent weights by magnitude (:func:`magnitude_masks`; a weight step
is gradual by nature: followed by a fine-tune, the caller reaches its sparsity along AGP
instead, see :class:`AgpRecurrentMasking`; here it applies at once).

Where every consumer of a channel has stopped reading it, the kernel step cuts that
channel physically too, as far as the group's allowed widths permit; the rest of the
removed kernels stay zeros in a dense layer (a structured-sparse convolution).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.criteria import Calibration
from models.errors import ModelsError
from models.names import GRANULARITIES, STEP_CRITERIA
from models.prune._apply import _tp_groups, apply_plan, score_channels
from models.prune._graph import ChannelGroup, PruningGraph, build_pruning_graph
from models.prune._kernels import KernelMasks, kernel_masks, zero_kernels
from models.prune._plan import Plan, validate_plan
from models.prune._recurrent_masks import magnitude_masks, zeroed_recurrent_masks
from models.prune._tracing import output_channels, trace_dependencies

__all__ = [
    "PruningStep",
    "SparsePruned",
    "apply_sequence",
    "cut_dead_channels",
    "weight_step",
    "widths_of",
]


@dataclass(frozen=True)
class PruningStep:
    """One step of a hybrid sequence.

    Attributes:
        granularity: ``channel`` (whole channels, or hidden units, of every group),
            ``kernel`` (single k×k kernels of every convolution) or ``weight`` (single
            weights of every LSTM/GRU ``weight_ih_l*``/``weight_hh_l*`` matrix; biases
            and other layers stay dense).
        criterion: ranks what goes; any :data:`models.criteria.CRITERIA` for channels,
            :data:`models.names.KERNEL_CRITERION_NAMES` for kernels,
            :data:`models.names.WEIGHT_CRITERION_NAMES` (magnitude) for weights.
        amount: 0 <= amount < 1. Channel and kernel steps: the share of what is left to
            remove, of each group's current channels (rounded as :func:`uniform_plan`
            rounds), or of each convolution's kept kernels (see :func:`kernel_masks`).
            Weight steps: the sparsity to reach, the share of each recurrent matrix that
            is zero afterwards (weights already zero count, and stay zero).
    """

    granularity: str
    criterion: str
    amount: float

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ModelsError(
                f"unknown granularity {self.granularity!r}; choose {' or '.join(GRANULARITIES)}"
            )
        known = STEP_CRITERIA[self.granularity]
        if self.criterion not in known:
            raise ModelsError(
                f"criterion {self.criterion!r} cannot rank {self.granularity}s; choose one "
                f"of {', '.join(known)}"
            )
        if not (isinstance(self.amount, int | float) and 0.0 <= self.amount < 1.0):
            raise ModelsError(f"a step's amount must be in [0, 1), got {self.amount!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the step as the job spec writes it."""
        return {"granularity": self.granularity, "criterion": self.criterion, "amount": self.amount}


@dataclass(frozen=True)
class SparsePruned:
    """The outcome of a sequence: a physically smaller model with some kernels (or
    recurrent weights) zeroed.

    Attributes:
        model: the pruned model in eval mode; removed kernels and recurrent weights are
            zeros of its weights (recurrent zeros need no mask: a dense checkpoint
            stores them).
        plan: every group's width, as a plan of the unpruned model (what
            ``load_pruned`` replays before the masks).
        masks: the kernels removed, by module path of the pruned model.
    """

    model: nn.Module
    plan: Plan
    masks: KernelMasks


def _example(shape: Sequence[int]) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))


def _widths(model: nn.Module, graph: PruningGraph) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {g.name: output_channels(modules[g.name]) for g in graph.groups}


def widths_of(model: nn.Module, graph: PruningGraph) -> Plan:
    """Return the width of every group of ``graph`` (the unpruned model's) in ``model``,
    a pruned copy: the plan ``load_pruned`` replays to rebuild its structure."""
    return Plan(_widths(model, graph))


def _prune_with_masks(
    model: nn.Module,
    masks: KernelMasks,
    plan: Mapping[str, int],
    scores: Mapping[str, torch.Tensor],
    graph: PruningGraph,
) -> tuple[nn.Module, KernelMasks]:
    """Cut channels of ``model`` and carry the masks along: the masks, written into a copy
    of the model as its weights, are cut with the same scores (so the same channels)."""
    pruned = apply_plan(model, plan, input_shape=graph.input_shape, graph=graph, scores=scores)
    if not masks:
        return pruned, masks
    carrier = copy.deepcopy(model)
    modules = dict(carrier.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            weight = modules[name].weight
            assert isinstance(weight, torch.Tensor)
            weight.copy_(mask.view(*mask.shape, *([1] * (weight.dim() - 2))).expand_as(weight))
    cut = apply_plan(carrier, plan, input_shape=graph.input_shape, graph=graph, scores=scores)
    cut_modules = dict(cut.named_modules())
    carried = {}
    for name in masks:
        weight = cut_modules[name].weight
        assert isinstance(weight, torch.Tensor)
        carried[name] = weight.detach().flatten(2)[:, :, 0] > 0.5
    return pruned, KernelMasks(carried)


def _consumer_columns(dg: Any, tp_group: Any, masks: KernelMasks, name_of: dict[Any, str]) -> Any:
    """Yield, per item of a group that reads its channels, (root channels, unread flags)."""
    for item in tp_group:
        if dg.is_out_channel_pruning_fn(item.dep.handler):
            continue
        module = item.dep.target.module
        roots = list(getattr(item, "root_idxs", None) or [])
        if len(roots) != len(item.idxs) or any(r is None for r in roots):
            yield None, None  # an index mapping we cannot follow: not safe
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            if module.groups == module.in_channels == module.out_channels:
                continue  # depthwise: its own outputs are in the group, their readers count
            name = name_of.get(module, "")
            if module.groups != 1 or name not in masks:
                yield roots, [False] * len(roots)
                continue
            unread = ~masks[name].any(0)
            yield roots, [bool(unread[i]) for i in item.idxs]
        elif isinstance(module, nn.Linear | nn.modules.rnn.RNNBase | nn.Embedding):
            yield roots, [False] * len(roots)
        # norms, activations, pooling and Torch-Pruning's ops pass channels through


def _unread_channels(
    dg: Any, tp_group: Any, group: ChannelGroup, masks: KernelMasks, name_of: dict[Any, str]
) -> torch.Tensor:
    unread = torch.ones(group.channels, dtype=torch.bool)
    for roots, flags in _consumer_columns(dg, tp_group, masks, name_of):
        if roots is None:
            return torch.zeros_like(unread)
        for root, flag in zip(roots, flags, strict=True):
            unread[int(root)] &= flag
    return unread


def cut_dead_channels(
    model: nn.Module,
    masks: KernelMasks,
    base: PruningGraph,
    *,
    ignored_layers: Iterable[str] = (),
) -> tuple[nn.Module, KernelMasks]:
    """Cut physically the channels that no layer reads any more, as far as widths allow.

    A channel is unread when every convolution that takes it as input has removed that
    kernel from all its filters, and nothing else (a linear layer, an unmasked or grouped
    convolution) reads it; a residual channel counts every reader of the stream. Each
    group then loses as many of its unread channels as keeps its width one the unpruned
    model's group allows (a multiple of its step); the others stay zero columns.

    Args:
        model: the current model; its removed kernels are already zeros.
        masks: its kernel masks.
        base: the graph of the unpruned model, whose group rules the widths follow.
        ignored_layers: module paths whose output channels are never cut.

    Returns:
        ``(model, masks)``: the model (a new one if anything was cut) and its masks.
    """
    if not masks:
        return model, masks
    current = build_pruning_graph(
        model, base.input_shape, round_to=base.round_to, ignored_layers=ignored_layers
    )
    work = copy.deepcopy(model).eval()
    dg = trace_dependencies(work, _example(base.input_shape))
    tp_groups = _tp_groups(dg, work, current, ignored_layers)
    name_of = {m: n for n, m in work.named_modules()}
    plan: dict[str, int] = {}
    scores: dict[str, torch.Tensor] = {}
    base_names = set(base.names)
    for group in current.groups:
        if group.slices > 1 or group.name not in tp_groups or group.name not in base_names:
            continue
        unread = _unread_channels(dg, tp_groups[group.name], group, masks, name_of)
        width = _narrowest_allowed(base.group(group.name), group.channels, int(unread.sum()))
        if width < group.channels:
            plan[group.name] = width
            scores[group.name] = (~unread).float()  # unread first, the lowest index first
    if not plan:
        return model, masks
    return _prune_with_masks(model, masks, plan, scores, current)


def _narrowest_allowed(base_group: ChannelGroup, width: int, removable: int) -> int:
    """Return the narrowest width the base group allows between width - removable and width."""
    allowed = [w for w in base_group.allowed_widths() if width - removable <= w <= width]
    return min(allowed) if allowed else width


def weight_step(model: nn.Module, amount: float) -> None:
    """Zero, in place, the smallest-magnitude ``amount`` share of each recurrent weight
    matrix of ``model``; weights already zero stay zero (so a matrix may end sparser).

    Raises:
        ModelsError: the model has no LSTM/GRU/RNN layer.
    """
    held = zeroed_recurrent_masks(model)
    if not held.masks:
        raise ModelsError(
            "a weight step prunes the weights of LSTM/GRU layers, and this model has none; "
            "prune a convolutional model with channel or kernel steps"
        )
    magnitude_masks(model, amount).apply(model)
    held.apply(model)


def _channel_step(
    model: nn.Module,
    masks: KernelMasks,
    step: PruningStep,
    base: PruningGraph,
    calib: Calibration | None,
    seed: int,
    ignored_layers: Iterable[str],
) -> tuple[nn.Module, KernelMasks]:
    current = build_pruning_graph(
        model, base.input_shape, round_to=base.round_to, ignored_layers=ignored_layers
    )
    plan: dict[str, int] = {}
    for group in current.groups:
        if group.name not in base.names:
            raise ModelsError(f"group {group.name!r} of the pruned model is not in the original")
        rule = base.group(group.name)
        keep = group.channels - math.floor(group.channels * step.amount)
        if keep != group.channels:
            keep = max(rule.min_channels, keep - keep % rule.step)
        plan[group.name] = min(keep, group.channels)
    plan = dict(validate_plan(plan, current))
    scores = score_channels(
        model, step.criterion, calib, input_shape=base.input_shape, graph=current, seed=seed
    )
    return _prune_with_masks(model, masks, plan, scores, current)


def apply_sequence(
    model: nn.Module,
    steps: Sequence[PruningStep],
    calib: Calibration | None = None,
    *,
    input_shape: Sequence[int],
    graph: PruningGraph | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    round_to: int = 8,
    ignored_layers: Iterable[str] = (),
    seed: int = 0,
) -> SparsePruned:
    """Run ``steps`` in order on a copy of ``model`` and return the result.

    Args:
        model: the model to prune (not modified): the unpruned one, or one already pruned
            from it (a search's candidate) together with the unpruned model's ``graph``.
        steps: the sequence, applied first to last.
        calib: calibration batches for data-driven channel criteria.
        input_shape: (C, H, W) of one input.
        graph: the unpruned model's :class:`PruningGraph` (built from ``model`` if None).
        masks: kernels ``model`` has already lost (they stay lost).
        round_to: channel multiple, used only when ``graph`` is None.
        ignored_layers: module paths never pruned, at either granularity.
        seed: seeds random criteria; step ``k`` uses ``seed + k``.

    Returns:
        The :class:`SparsePruned` model, its plan over the unpruned groups, and its masks.

    Raises:
        ModelsError: a step that cannot be applied (a data criterion without ``calib``,
            a group the original does not have).
    """
    ignored = tuple(ignored_layers)
    base = graph or build_pruning_graph(
        model, input_shape, round_to=round_to, ignored_layers=ignored
    )
    current = zero_kernels(copy.deepcopy(model).eval(), masks or {})
    state = KernelMasks(dict(masks or {}))
    for k, step in enumerate(steps):
        if step.granularity == "channel":
            current, state = _channel_step(current, state, step, base, calib, seed + k, ignored)
        elif step.granularity == "weight":
            weight_step(current, step.amount)
        else:
            state = kernel_masks(
                current,
                step.amount,
                step.criterion,
                masks=state,
                ignored_layers=ignored,
                seed=seed + k,
            )
            zero_kernels(current, state)
            current, state = cut_dead_channels(current, state, base, ignored_layers=ignored)
    plan = validate_plan(_widths(current, base), base)
    return SparsePruned(current.eval(), plan, state)
