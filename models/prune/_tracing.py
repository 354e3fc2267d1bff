"""Reading Torch-Pruning's DependencyGraph: tracing a model, and naming what the trace
finds (its nodes, its groups, the layer that makes the logits) by module path.

:mod:`models.prune._graph` turns these names into a :class:`PruningGraph`;
:mod:`models.prune._apply` and :mod:`models.prune._sequence` use them to find the
Torch-Pruning group behind each of its groups again.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from models.errors import ModelsError

__all__ = [
    "PRUNABLE_ROOTS",
    "TP_MODULE_TYPES",
    "channel_units",
    "find_output_layer",
    "grad_fn_recorder",
    "group_name",
    "names_of_nodes",
    "output_channels",
    "trace_dependencies",
]

PRUNABLE_ROOTS = (nn.Conv2d, nn.Conv1d, nn.Linear)


def find_output_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Return the module path of the last conv/linear layer a forward pass runs.

    That layer produces the logits; its output channels are the classes and are never
    pruned.

    Raises:
        ModelsError: the model runs no conv or linear layer.
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_ROOTS):
            handles.append(module.register_forward_hook(_recorder(order, name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ModelsError("the model has no convolution or linear layer to prune")
    return order[-1]


def _recorder(order: list[str], name: str) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        order.append(name)

    return hook


def trace_dependencies(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Return Torch-Pruning's dependency graph of ``model`` traced on ``example``."""
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)


def output_channels(module: nn.Module) -> int:
    """Return the channels ``module`` produces, as Torch-Pruning counts them.

    Use it to check a pruned model group by group: rebuilding the groups from the pruned
    model is no check, since a grouped conv cut to one channel per group looks depthwise
    to Torch-Pruning and is merged with its input's group.
    """
    if isinstance(module, nn.LSTM | nn.GRU):  # our recurrent groups: hidden units
        return int(module.hidden_size)
    return int(tp.DependencyGraph().get_pruner_of_module(module).get_out_channels(module))


TP_MODULE_TYPES = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.PReLU,
    nn.Embedding,
    nn.MultiheadAttention,
    nn.LSTM,
)


def grad_fn_recorder(store: dict[Any, str], channels: dict[str, int], name: str) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            store.setdefault(output.grad_fn, name)
            if output.dim() >= 2:
                channels.setdefault(name, int(output.shape[1]))

    return hook


def names_of_nodes(
    dg: tp.DependencyGraph, name_of: dict[nn.Module, str], op_outputs: dict[Any, str]
) -> dict[Any, str]:
    """Map DependencyGraph nodes to the module path of the layer they stand for."""
    names: dict[Any, str] = {}
    for key, node in dg.module2node.items():
        if isinstance(key, nn.Module) and key in name_of:
            names[node] = name_of[key]
        elif node.grad_fn is not None and node.grad_fn in op_outputs:
            names[node] = op_outputs[node.grad_fn]
    return names


def channel_units(group: Any) -> int:
    """Return how many equal slices grouped convolutions force a group's channels into."""
    unit = 1
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            if module.groups != module.out_channels:  # depthwise needs no slicing
                unit = math.lcm(unit, module.groups)
    return unit


def group_name(dg: tp.DependencyGraph, group: Any, name_of: dict[nn.Module, str]) -> str:
    """Return the name of a Torch-Pruning group: the first layer (in module order) whose
    output channels it removes, so a residual group is named by the layer that starts
    the residual stream rather than by whichever layer the tracer met first."""
    order = {m: i for i, m in enumerate(name_of)}
    producers = [
        item.dep.target.module
        for item in group
        if isinstance(item.dep.target.module, PRUNABLE_ROOTS)
        and item.dep.target.module in name_of
        and dg.is_out_channel_pruning_fn(item.dep.handler)
    ]
    if not producers:
        return name_of[group[0].dep.target.module]
    return name_of[min(producers, key=lambda m: order[m])]
