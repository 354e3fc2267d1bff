"""Hidden-unit groups of stacked LSTM/GRU layers, and their physical removal.

Torch-Pruning handles single LSTM layers only, so recurrent models are grouped and cut
here. A hidden unit ``j`` of an LSTM layer owns one row in each of its 4 gate blocks
(GRU: 3) of ``weight_ih``, ``weight_hh`` and the biases, column ``j`` of ``weight_hh``,
and the input column ``j`` of whatever reads the layer: the next recurrent layer's
``weight_ih`` or the classifier. Removing the unit removes all of them at once.

Supported shape: single-layer, unidirectional ``nn.LSTM``/``nn.GRU`` modules (without
``proj_size``) that feed one another in registration order, the last one read by the
classifier (the last linear layer), as :class:`models.zoo.RecurrentClassifier` builds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from models.errors import ModelsError
from models.names import RECURRENT_CRITERIA
from models.prune._graph import ChannelGroup, DimCoverage, LayerCoverage, PruningGraph
from models.prune._tracing import find_output_layer

__all__ = [
    "RECURRENT_CRITERIA",
    "build_recurrent_graph",
    "has_recurrent_layers",
    "prune_recurrent",
    "recurrent_scores",
]

RNN_TYPES = (nn.LSTM, nn.GRU)


def _gates(module: nn.Module) -> int:
    return 4 if isinstance(module, nn.LSTM) else 3


def _param(rnn: nn.Module, name: str) -> torch.Tensor:
    """Return one of a single-layer RNN's tensors (``weight_ih``, ``bias_hh``, ...)."""
    return rnn.get_parameter(f"{name}_l0")


def has_recurrent_layers(model: nn.Module) -> bool:
    """Return whether ``model`` holds an ``nn.LSTM`` or ``nn.GRU`` anywhere."""
    return any(isinstance(m, RNN_TYPES) for m in model.modules())


def _stack(model: nn.Module, example: torch.Tensor) -> tuple[list[str], str]:
    """Return the recurrent layers' module paths in order, and the classifier's.

    Raises:
        ModelsError: the model is not a supported stack (see the module docstring).
    """
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, RNN_TYPES)]
    for name in names:
        rnn = modules[name]
        assert isinstance(rnn, RNN_TYPES)
        if rnn.num_layers != 1 or rnn.bidirectional or rnn.proj_size:
            raise ModelsError(
                f"recurrent layer {name!r} has num_layers={rnn.num_layers}, "
                f"bidirectional={rnn.bidirectional}: only single-layer, unidirectional "
                "LSTM/GRU modules without projections can be pruned (stack them as modules)"
            )
    for before, after in zip(names, names[1:], strict=False):
        if modules[after].input_size != modules[before].hidden_size:
            raise ModelsError(f"{after!r} does not read {before!r}: cannot group its hidden units")
    output = find_output_layer(model, example)
    head = modules[output]
    if not isinstance(head, nn.Linear) or head.in_features != modules[names[-1]].hidden_size:
        raise ModelsError(
            f"the classifier {output!r} does not read the last recurrent layer {names[-1]!r}"
        )
    return names, output


def _step(channels: int, round_to: int) -> int:
    return 1 if channels <= round_to else round_to


def build_recurrent_graph(
    model: nn.Module, input_shape: Sequence[int], *, round_to: int = 8
) -> PruningGraph:
    """Return the hidden-unit groups of a recurrent model as a :class:`PruningGraph`.

    One group per recurrent layer, named by its module path, ``channels`` its hidden
    units. A layer's cost coverage counts its inputs as the previous layer's units plus
    its own (its MACs and weights scale with hidden × (inputs + hidden)), so the analytic
    cost of a plan is exact.

    Args:
        model: the unpruned model; run once, not modified.
        input_shape: (T, F) of one input sequence.
        round_to: widths are multiples of this unless a layer is narrower.

    Returns:
        The graph.

    Raises:
        ModelsError: not a supported recurrent stack.
    """
    was_training = model.training
    model.eval()
    try:
        example = torch.zeros((1, *input_shape))
        names, output = _stack(model, example)
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())
    groups: list[ChannelGroup] = []
    layers: dict[str, LayerCoverage] = {}
    previous: tuple[str, int] | None = None
    for name in names:
        rnn = modules[name]
        hidden, width = int(rnn.hidden_size), int(rnn.input_size)
        step = _step(hidden, round_to)
        readers = names[names.index(name) + 1 : names.index(name) + 2] or [output]
        groups.append(ChannelGroup(name, hidden, step, min(step, hidden), (name, *readers)))
        owned = ((name, hidden),) if previous is None else (previous, (name, hidden))
        layers[name] = LayerCoverage(
            name,
            "dense",
            DimCoverage(width + hidden, tuple(sorted(owned))),
            DimCoverage(hidden, ((name, hidden),)),
        )
        previous = (name, hidden)
    head = modules[output]
    assert isinstance(head, nn.Linear) and previous is not None
    layers[output] = LayerCoverage(
        output,
        "dense",
        DimCoverage(head.in_features, (previous,)),
        DimCoverage(head.out_features),
    )
    return PruningGraph(
        groups=tuple(groups),
        layers=layers,
        input_shape=tuple(int(v) for v in input_shape),
        output_layer=output,
        round_to=round_to,
    )


def _unit_rows(module: nn.Module) -> torch.Tensor:
    """Return (hidden, gates × (inputs + hidden) [+ 2 × gates]) weights, one row per unit."""
    hidden = int(module.hidden_size)  # type: ignore[arg-type]
    gates = _gates(module)
    parts = [_param(module, "weight_ih"), _param(module, "weight_hh")]
    if module.bias:
        parts += [_param(module, "bias_ih")[:, None], _param(module, "bias_hh")[:, None]]
    # (gates × hidden, k) → (hidden, gates × k): unit j's rows of every gate block together
    return torch.cat(
        [p.detach().view(gates, hidden, -1).transpose(0, 1).reshape(hidden, -1) for p in parts],
        dim=1,
    )


def recurrent_scores(
    model: nn.Module, graph: PruningGraph, criterion: str = "l1", *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Return one score per hidden unit of every group (higher = keep).

    Args:
        model: the unpruned recurrent model.
        graph: its :func:`build_recurrent_graph`.
        criterion: ``l1`` or ``l2`` (norm of the unit's gate rows in every weight and
            bias), or ``random`` (seeded).
        seed: seeds ``random``.

    Returns:
        Group name → float tensor of its hidden units' scores.

    Raises:
        ModelsError: a criterion that cannot rank hidden units.
    """
    if criterion not in RECURRENT_CRITERIA:
        raise ModelsError(
            f"criterion {criterion!r} cannot rank the hidden units of recurrent layers; "
            f"use one of {', '.join(RECURRENT_CRITERIA)}"
        )
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, torch.Tensor] = {}
    for group in graph.groups:
        if criterion == "random":
            scores[group.name] = torch.rand(group.channels, generator=generator)
            continue
        rows = _unit_rows(modules[group.name])
        scores[group.name] = rows.abs().sum(1) if criterion == "l1" else rows.norm(dim=1)
    return scores


def _cut_layer(rnn: nn.Module, keep_in: torch.Tensor | None, keep: torch.Tensor) -> nn.Module:
    hidden, gates = int(rnn.hidden_size), _gates(rnn)  # type: ignore[arg-type]
    rows = torch.cat([g * hidden + keep for g in range(gates)])
    w_ih = _param(rnn, "weight_ih")[rows]
    if keep_in is not None:
        w_ih = w_ih[:, keep_in]
    new = type(rnn)(int(w_ih.shape[1]), len(keep), batch_first=rnn.batch_first, bias=bool(rnn.bias))
    _param(new, "weight_ih").copy_(w_ih)
    _param(new, "weight_hh").copy_(_param(rnn, "weight_hh")[rows][:, keep])
    if rnn.bias:
        _param(new, "bias_ih").copy_(_param(rnn, "bias_ih")[rows])
        _param(new, "bias_hh").copy_(_param(rnn, "bias_hh")[rows])
    return new.train(rnn.training)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, module)


def prune_recurrent(
    model: nn.Module,
    graph: PruningGraph,
    widths: Mapping[str, int],
    scores: Mapping[str, torch.Tensor],
) -> nn.Module:
    """Return a copy of ``model`` whose recurrent layers keep ``widths`` hidden units.

    Each layer keeps its highest-scoring units (in their original order); the gate rows
    of a unit go together, and the next layer and the classifier lose the matching input
    columns. The widths are taken as valid (see :func:`validate_plan`).

    Args:
        model: the unpruned recurrent model (not modified).
        graph: its :func:`build_recurrent_graph`.
        widths: group name → hidden units kept; groups not named keep all.
        scores: group name → one score per hidden unit.

    Returns:
        The pruned model, in eval mode.

    Raises:
        ModelsError: a score tensor does not match its group.
    """
    pruned = copy.deepcopy(model).eval()
    modules = dict(pruned.named_modules())
    keep_in: torch.Tensor | None = None
    with torch.no_grad():
        for group in graph.groups:
            score = scores[group.name] if group.name in scores else None
            width = widths.get(group.name, group.channels)
            if score is None or score.numel() != group.channels:
                if width == group.channels:
                    score = torch.zeros(group.channels)
                else:
                    raise ModelsError(f"group {group.name!r} needs {group.channels} scores")
            keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:width]).values
            _replace(pruned, group.name, _cut_layer(modules[group.name], keep_in, keep))
            keep_in = keep
        head = modules[graph.output_layer]
        assert isinstance(head, nn.Linear) and keep_in is not None
        new_head = nn.Linear(len(keep_in), head.out_features, bias=head.bias is not None)
        new_head.weight.copy_(head.weight[:, keep_in])
        if head.bias is not None:
            new_head.bias.copy_(head.bias)
        _replace(pruned, graph.output_layer, new_head)
    return pruned.eval()
