"""Depth: residual blocks that can be removed whole, and removing them.

A block ``M`` with an identity shortcut computes ``act(x + branch(x))``. With every
weight and bias of ``M`` at zero its branch outputs zero, so it computes ``act(x)``,
which is ``x`` when ``act`` is a ReLU fed the output of an earlier ReLU (ResNets) or
absent (MobileNetV2's inverted residuals). :func:`removable_blocks` finds such blocks by
that property alone, with no knowledge of the architecture: a submodule that holds
parameters, keeps its input's shape, and maps a non-negative input to itself once its
own parameters are zeroed. The smallest such modules are reported (a ResNet stage of
shape-keeping blocks passes the test too, but its blocks are the units). Replacing a
block by ``nn.Identity`` (:func:`remove_blocks`) is then the same as zeroing its branch,
and the rest of the network is untouched: a pretrained model loses only what the
block's branch contributed.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from models.errors import PlanError

__all__ = [
    "block_containers",
    "block_contributions",
    "removable_blocks",
    "remove_blocks",
    "removal_order",
    "spread_removal",
]

_TOLERANCE = 1e-6


def _input_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, torch.Size]:
    """Return, per submodule called exactly once with one tensor that it returns
    reshaped to the same shape, that shape (one forward pass of a zero batch of one)."""
    calls: dict[str, list[tuple[torch.Size | None, torch.Size | None]]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(mod: nn.Module, args: tuple[object, ...], out: object, name: str = name) -> None:
            shape_in = (
                args[0].shape if len(args) == 1 and isinstance(args[0], torch.Tensor) else None
            )
            shape_out = out.shape if isinstance(out, torch.Tensor) else None
            calls.setdefault(name, []).append((shape_in, shape_out))

        handles.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    shapes: dict[str, torch.Size] = {}
    for name, seen in calls.items():
        if len(seen) == 1 and seen[0][0] is not None and seen[0][0] == seen[0][1]:
            shapes[name] = seen[0][0]
    return shapes


def _passes_input_when_zeroed(module: nn.Module, shape: torch.Size) -> bool:
    """Return whether ``module`` with all its parameters zeroed returns a non-negative
    input unchanged (its branch vanishes and its shortcut is the identity). The
    parameters are zeroed in place for one forward pass and then restored."""
    parameters = list(module.parameters())
    if not parameters:
        return False
    saved = [p.detach().clone() for p in parameters]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for parameter in parameters:
                parameter.zero_()
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) + 0.5
            try:
                y = module(x)
            except Exception:  # a module that cannot run alone is no block
                return False
    finally:
        with torch.no_grad():
            for parameter, value in zip(parameters, saved, strict=True):
                parameter.copy_(value)
        module.train(was_training)
    return (
        isinstance(y, torch.Tensor)
        and y.shape == x.shape
        and bool(torch.allclose(y, x, atol=_TOLERANCE))
    )


def _is_torch_layer(module: nn.Module) -> bool:
    """Return whether ``module`` is one of PyTorch's own leaf layers (a conv, a norm, an
    activation...): zeroed, none of them passes its input through, so they need no test."""
    return not list(module.children()) and type(module).__module__.startswith("torch.nn.")


def removable_blocks(
    model: nn.Module, input_shape: Sequence[int], keep_layers: Iterable[str] = ()
) -> list[str]:
    """Return the module paths of ``model``'s removable residual blocks, in module order.

    A block is removable when it holds parameters, is called once with one tensor whose
    shape it keeps, and returns a non-negative input unchanged once all its parameters
    are zeroed (see the module docstring); of nested ones only the innermost count.
    ``model`` is left as it was (each candidate's parameters are zeroed for one forward
    pass and restored).

    Args:
        model: any module taking one ``(N, *input_shape)`` tensor.
        input_shape: one sample's shape, without the batch dimension.
        keep_layers: module paths that must stay (ignored layers, the classifier): a
            block that holds one is not removable.
    """
    shapes = _input_shapes(model, input_shape)
    modules = dict(model.named_modules())
    candidates = [
        name
        for name, shape in shapes.items()
        if not _is_torch_layer(modules[name]) and _passes_input_when_zeroed(modules[name], shape)
    ]
    kept = set(keep_layers)
    return [
        name
        for name in candidates
        if not any(other.startswith(f"{name}.") for other in candidates)
        and not any(layer == name or layer.startswith(f"{name}.") for layer in kept)
    ]


def block_containers(blocks: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Return the blocks grouped by the module that holds them (``layer1.3`` is in
    ``layer1``; a top-level block is in ``""``), in module order."""
    out: dict[str, list[str]] = {}
    for name in blocks:
        out.setdefault(name.rpartition(".")[0], []).append(name)
    return {container: tuple(names) for container, names in out.items()}


def spread_removal(blocks: Sequence[str], count: int) -> tuple[str, ...]:
    """Return ``count`` of ``blocks`` to remove, evenly spread over them, so that the
    blocks that stay are spread too (of 8 blocks, removing 4 takes every other one,
    the first included).

    Raises:
        PlanError: ``count`` is negative or more than there are blocks.
    """
    total = len(blocks)
    if not 0 <= count <= total:
        raise PlanError(f"cannot remove {count} of {total} blocks")
    # the centres of ``count`` equal slices of the stage, rounded half down
    return tuple(blocks[math.ceil((i + 0.5) * total / count - 1.0)] for i in range(count))


def block_contributions(
    model: nn.Module, blocks: Iterable[str], inputs: torch.Tensor
) -> dict[str, float]:
    """Return how much each block changes what flows through it on ``inputs`` (one
    forward pass in eval mode): ``||block(x) - x|| / ||x||`` over the batch, rounded to
    three significant digits (so that machines whose arithmetic differs in the last
    bits order the blocks alike).

    A block whose output is close to its input is the cheapest to remove: residual
    networks behave like ensembles of shallower paths and lose little when such a block
    goes (Veit et al. 2016). On resnet56 trained on Fashion-MNIST the contribution falls
    along each stage, from 0.6-1.1 at the first removable block to 0.25-0.29 at the last,
    and ranks the blocks as the accuracy after removing each one (BatchNorm
    recalibrated, 1,800 validation images) does, Spearman 0.65. That holds before
    training only: after half an epoch of fine-tuning, plans of half the blocks removed
    by contribution and spread evenly score alike (``search_quality_compute_resnet56.md``,
    stop 23).

    Raises:
        PlanError: a block is not a submodule of ``model`` or never ran.
    """
    names = list(blocks)
    seen: dict[str, float] = {}

    def record(module: nn.Module, args: tuple[object, ...], out: object, name: str) -> None:
        x = args[0]
        if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            seen[name] = float((out - x).norm() / x.norm().clamp_min(1e-12))

    handles = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise PlanError(f"{name!r} is not a block of this model") from None
        handles.append(module.register_forward_hook(functools.partial(record, name=name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise PlanError(f"blocks that did not run on one tensor: {', '.join(missing)}")
    return {name: float(f"{seen[name]:.3g}") for name in names}


def removal_order(blocks: Sequence[str], contributions: Mapping[str, float]) -> tuple[str, ...]:
    """Return the order in which a stage's ``blocks`` go: the smallest contribution
    first (:func:`block_contributions`), ties in module order."""
    position = {name: i for i, name in enumerate(blocks)}
    return tuple(sorted(blocks, key=lambda b: (contributions[b], position[b])))


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Return a copy of ``model`` with the blocks ``names`` replaced by ``nn.Identity``.

    Raises:
        PlanError: a name is not a submodule of ``model``.
    """
    reduced = copy.deepcopy(model)
    for name in names:
        try:
            reduced.get_submodule(name)
        except AttributeError:
            raise PlanError(f"{name!r} is not a block of this model") from None
        reduced.set_submodule(name, nn.Identity())
    return reduced
