"""Which channels move together: the :class:`PruningGraph` of a model, its groups and
per-layer coverage, and :func:`build_pruning_graph`, which fills them from Torch-Pruning's
DependencyGraph (traced and named in :mod:`models.prune._tracing`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from models.errors import ModelsError
from models.prune._depth import removable_blocks
from models.prune._tracing import (
    PRUNABLE_ROOTS,
    TP_MODULE_TYPES,
    channel_units,
    find_output_layer,
    grad_fn_recorder,
    group_name,
    names_of_nodes,
    trace_dependencies,
)

__all__ = [
    "ChannelGroup",
    "DimCoverage",
    "LayerCoverage",
    "PruningGraph",
    "build_pruning_graph",
    "inside",
]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that can only be removed together, named by the layer that produces them.

    Removing channel ``i`` of the group removes output channel ``i`` of the root layer and
    every coupled slice: the BN after it, the input channels of its consumers, the other
    branch of a residual add.

    Attributes:
        name: module path of the root layer (for example ``layer1.0.conv1``).
        channels: channels the group has in the unpruned model.
        step: widths a plan may keep are multiples of ``step`` (or ``channels`` itself).
        min_channels: the narrowest width a plan may keep.
        layers: module paths of every layer whose weights change when the group shrinks.
        slices: grouped convolutions split the channels into this many equal slices that
            must shrink alike (1 for ordinary layers); ``step`` is a multiple of it.
    """

    name: str
    channels: int
    step: int
    min_channels: int
    layers: tuple[str, ...]
    slices: int = 1

    def allowed_widths(self) -> list[int]:
        """Return every width a plan may give this group, ascending."""
        widths = list(range(self.min_channels, self.channels + 1, self.step))
        if widths[-1] != self.channels:
            widths.append(self.channels)
        return widths

    def is_allowed(self, width: int) -> bool:
        """Return whether a plan may keep ``width`` channels of this group."""
        if width == self.channels:
            return True
        return self.min_channels <= width <= self.channels and width % self.step == 0

    @property
    def prunable(self) -> bool:
        """True when the group can be narrowed at all."""
        return self.min_channels < self.channels


@dataclass(frozen=True)
class DimCoverage:
    """How many channels of one tensor dimension each group owns.

    ``size`` channels in all; ``by_group[name]`` of them shrink with group ``name``;
    the rest (network input, the classifier's outputs, ignored layers) never change.
    """

    size: int
    by_group: tuple[tuple[str, int], ...] = ()

    def kept_fraction(self, group_fractions: dict[str, float]) -> float:
        """Return the fraction of this dimension left when each group keeps a fraction."""
        if self.size == 0:
            return 1.0
        removed = sum(n * (1.0 - group_fractions.get(g, 1.0)) for g, n in self.by_group)
        return max(0.0, 1.0 - removed / self.size)


@dataclass(frozen=True)
class LayerCoverage:
    """What pruning does to one layer: which groups shrink its input and output channels.

    ``kind`` says how its cost scales: ``dense`` (conv/linear: input × output),
    ``depthwise`` (one filter per channel: output only) or ``channelwise`` (norms,
    pooling, activations: the channel count).
    """

    name: str
    kind: str
    inputs: DimCoverage
    outputs: DimCoverage


@dataclass(frozen=True)
class PruningGraph:
    """The prunable structure of one model, independent of any particular model object.

    Attributes:
        groups: prunable groups in execution order of their root layers.
        layers: coverage of every layer with weights or counted compute, by module path.
        input_shape: the (C, H, W) the graph was traced with, or (T, F) for a recurrent
            model (whose groups are hidden units: :mod:`models.prune._recurrent`).
        output_layer: module path of the classifier layer (never pruned on its outputs).
        round_to: the channel multiple the groups' ``step`` was derived from.
        blocks: module paths of the residual blocks a plan may remove whole
            (:func:`models.prune.removable_blocks`; a plan gives such a block width 0).
    """

    groups: tuple[ChannelGroup, ...]
    layers: dict[str, LayerCoverage] = field(repr=False)
    input_shape: tuple[int, ...]
    output_layer: str
    round_to: int
    blocks: tuple[str, ...] = ()

    def removed_blocks(self, plan: Mapping[str, int]) -> tuple[str, ...]:
        """Return the blocks ``plan`` removes (those it gives width 0), in module order."""
        return tuple(b for b in self.blocks if plan.get(b, 1) == 0)

    def live_groups(self, plan: Mapping[str, int]) -> tuple[ChannelGroup, ...]:
        """Return the groups that are still in the model after ``plan`` removes its blocks
        (a group rooted inside a removed block goes with it)."""
        removed = self.removed_blocks(plan)
        return tuple(g for g in self.groups if not inside(g.name, removed))

    def group(self, name: str) -> ChannelGroup:
        """Return the group called ``name``.

        Raises:
            KeyError: no such group.
        """
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Names of all groups, in order."""
        return [g.name for g in self.groups]


def inside(name: str, blocks: Iterable[str]) -> bool:
    """Return whether module path ``name`` is one of ``blocks`` or lies within one."""
    return any(name == b or name.startswith(f"{b}.") for b in blocks)


def build_pruning_graph(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    round_to: int = 8,
    ignored_layers: Iterable[str] = (),
    find_blocks: bool = True,
) -> PruningGraph:
    """Trace ``model`` and return its prunable groups and per-layer coverage.

    Args:
        model: the unpruned network; it is run (each candidate block once more with its
            parameters zeroed, then restored: :func:`removable_blocks`), not modified.
        input_shape: (C, H, W) of one input; (T, F) for a model with LSTM/GRU layers,
            whose groups are hidden units (:func:`build_recurrent_graph`).
        round_to: widths are multiples of this unless a group is narrower.
        ignored_layers: module paths whose output channels must never be pruned (a
            block holding one is never removed either).
        find_blocks: False skips the search for removable residual blocks (one more
            forward pass per candidate block; ~0.5 s on resnet56): the graph's ``blocks``
            is then empty, enough to replay a plan that removes none.

    Returns:
        The :class:`PruningGraph`.

    Raises:
        ModelsError: the model cannot be traced, or an ignored layer does not exist.
    """
    if round_to < 1:
        raise ModelsError(f"round_to must be at least 1, got {round_to}")
    shape = tuple(int(v) for v in input_shape)
    if any(isinstance(m, nn.LSTM | nn.GRU) for m in model.modules()):
        # Torch-Pruning cannot group hidden units across stacked layers: ours does
        from models.prune._recurrent import build_recurrent_graph

        if len(shape) != 2 or tuple(ignored_layers):
            raise ModelsError(
                f"a recurrent model takes input_shape (T, F) and no ignored layers, "
                f"got {input_shape} and {list(ignored_layers)}"
            )
        return build_recurrent_graph(model, shape, round_to=round_to)
    if len(shape) != 3:
        raise ModelsError(f"input_shape must be (C, H, W), got {input_shape}")
    was_training = model.training
    model.eval()
    try:
        example = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
        output_layer = find_output_layer(model, example)
        name_of = {m: n for n, m in model.named_modules()}
        module_of = dict(model.named_modules())
        ignored = [output_layer, *ignored_layers]
        unknown = [n for n in ignored if n not in module_of]
        if unknown:
            raise ModelsError(f"ignored layers not found in the model: {', '.join(unknown)}")

        op_outputs: dict[Any, str] = {}
        op_channels: dict[str, int] = {}
        handles = [
            m.register_forward_hook(grad_fn_recorder(op_outputs, op_channels, n))
            for n, m in model.named_modules()
            if not list(m.children()) and not isinstance(m, TP_MODULE_TYPES)
        ]
        try:
            dg = trace_dependencies(model, example)
        except Exception as exc:
            raise ModelsError(
                f"Torch-Pruning could not trace this model ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            for h in handles:
                h.remove()

        tp_groups = list(
            dg.get_all_groups(
                ignored_layers=[module_of[n] for n in ignored], root_module_types=PRUNABLE_ROOTS
            )
        )
        groups: list[ChannelGroup] = []
        coverage: dict[tuple[str, str], dict[str, int]] = {}
        node_names = names_of_nodes(dg, name_of, op_outputs)
        for tp_group in tp_groups:
            group = _describe_group(dg, tp_group, name_of, round_to)
            if group is None:
                continue
            groups.append(group)
            for item in tp_group:
                node_name = node_names.get(item.dep.target)
                if node_name is None:
                    continue
                direction = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
                dims = coverage.setdefault((node_name, direction), {})
                dims[group.name] = max(dims.get(group.name, 0), len(item.idxs))
        position = {n: i for i, n in enumerate(module_of)}
        groups.sort(key=lambda g: position[g.name])
        layers = _layer_coverage(module_of, dg, node_names, coverage, op_channels)
        return PruningGraph(
            groups=tuple(groups),
            layers=layers,
            input_shape=(shape[0], shape[1], shape[2]),
            output_layer=output_layer,
            round_to=round_to,
            blocks=tuple(removable_blocks(model, shape, keep_layers=ignored))
            if find_blocks
            else (),
        )
    finally:
        model.train(was_training)


def _describe_group(
    dg: tp.DependencyGraph, group: Any, name_of: dict[nn.Module, str], round_to: int
) -> ChannelGroup | None:
    root = group[0].dep.target.module
    channels = dg.get_out_channels(root)
    if channels is None or root not in name_of:
        return None
    unit = channel_units(group)
    step = math.lcm(round_to, unit)
    if channels <= step:  # narrower than round_to: any multiple of the slicing unit
        step = unit
    order = {m: i for i, m in enumerate(name_of)}
    layers: list[str] = []
    for item in sorted(group, key=lambda it: order.get(it.dep.target.module, len(order))):
        module = item.dep.target.module
        if isinstance(module, nn.Module) and module in name_of and name_of[module] not in layers:
            if any(True for _ in module.parameters(recurse=False)):
                layers.append(name_of[module])
    return ChannelGroup(
        name=group_name(dg, group, name_of),
        channels=int(channels),
        step=step,
        min_channels=min(step, int(channels)),
        layers=tuple(layers),
        slices=unit,
    )


def _layer_coverage(
    modules: dict[str, nn.Module],
    dg: tp.DependencyGraph,
    node_names: dict[Any, str],
    coverage: dict[tuple[str, str], dict[str, int]],
    op_channels: dict[str, int],
) -> dict[str, LayerCoverage]:
    layers: dict[str, LayerCoverage] = {}
    names = set(node_names.values())
    for name in sorted(names):
        module = modules.get(name)
        if module is None:
            continue
        kind = _layer_kind(module)
        ins = coverage.get((name, "in"), {})
        outs = coverage.get((name, "out"), {})
        if name in op_channels:  # a plain op to Torch-Pruning: pooling, upsampling
            in_size = out_size = op_channels[name]
        else:
            in_ch, out_ch = dg.get_in_channels(module), dg.get_out_channels(module)
            if in_ch is None and out_ch is None:
                continue
            in_size, out_size = int(in_ch or out_ch or 0), int(out_ch or in_ch or 0)
        if kind == "channelwise":
            dim = DimCoverage(out_size, tuple(sorted({**ins, **outs}.items())))
            layers[name] = LayerCoverage(name, kind, dim, dim)
        else:
            layers[name] = LayerCoverage(
                name,
                kind,
                DimCoverage(in_size, tuple(sorted(ins.items()))),
                DimCoverage(out_size, tuple(sorted(outs.items()))),
            )
    return layers


def _layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:
            return "depthwise"
        return "dense"
    if isinstance(module, nn.Linear):
        return "dense"
    return "channelwise"
