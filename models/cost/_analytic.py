"""Predicted cost of a plan, from the group structure, without building the pruned model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from models.cost._counting import Cost, count_params, macs_by_layer, measure_cost, size_bytes
from models.cost._latency_calibration import calibration_plans
from models.prune import LayerCoverage, PruningGraph

__all__ = ["AnalyticCost", "check_plans"]

_DENSE_WEIGHTS = ("weight", "weight_ih_l0", "weight_hh_l0")
"""Tensors that scale with kept inputs × kept outputs: conv/linear weights, and a
single-layer LSTM/GRU's two weights (hidden units × (inputs + hidden units) together,
which its graph coverage counts as the layer's inputs)."""


@dataclass(frozen=True)
class _Term:
    """One layer's share of the cost and how it scales with its channels."""

    layer: LayerCoverage
    macs: int
    weight_params: int  # scales with inputs × outputs (dense) or outputs
    channel_params: int  # scales with outputs only (biases, BN affine, ...)
    weight_bytes: int
    channel_bytes: int


class AnalyticCost:
    """Predicts MACs, parameters and bytes of any plan in microseconds.

    Built once per unpruned model: fvcore counts each layer's MACs on the original, and
    the :class:`PruningGraph` says which groups own each layer's input and output
    channels. A dense conv/linear scales with kept-inputs × kept-outputs, a depthwise conv
    and channel-wise layers (BN, pooling) with kept channels; everything no group touches
    stays constant. Exact for these layer types; a model that also runs ops no layer
    term sees on pruned channels (a functional pooling in a parent's ``forward``, as
    mobilenet_v2's) is off by those ops' share, well under 1 %. :meth:`matches` tells
    the two apart on a really pruned model.

    Instances are immutable and safe to share between threads.
    """

    def __init__(self, model: nn.Module, graph: PruningGraph) -> None:
        total_macs, layer_macs = macs_by_layer(model, graph.input_shape, also=graph.blocks)
        modules = dict(model.named_modules())
        self.graph = graph
        self._channels = {g.name: g.channels for g in graph.groups}
        terms: list[_Term] = []
        covered_macs = covered_params = covered_bytes = 0
        for name, layer in graph.layers.items():
            module = modules[name]
            weight_p = channel_p = weight_b = channel_b = 0
            for tensor_name, t in module.state_dict(keep_vars=True).items():
                if "." in tensor_name or t.dim() == 0:  # submodules' tensors; step counters
                    continue
                scales_with_inputs = layer.kind == "dense" and tensor_name in _DENSE_WEIGHTS
                is_param = isinstance(t, nn.Parameter) and t.requires_grad
                nbytes = t.numel() * t.element_size()
                if scales_with_inputs:
                    weight_b += nbytes
                    weight_p += t.numel() if is_param else 0
                else:
                    channel_b += nbytes
                    channel_p += t.numel() if is_param else 0
            macs = layer_macs.get(name, 0)
            terms.append(_Term(layer, macs, weight_p, channel_p, weight_b, channel_b))
            covered_macs += macs
            covered_params += weight_p + channel_p
            covered_bytes += weight_b + channel_b
        self._terms = tuple(terms)
        self.baseline = Cost(total_macs, count_params(model), size_bytes(model))
        self._fixed = Cost(
            total_macs - covered_macs,
            self.baseline.params - covered_params,
            self.baseline.size_bytes - covered_bytes,
        )
        self._blocks = {
            name: _block_share(name, modules[name], layer_macs.get(name, 0), terms)
            for name in graph.blocks
        }

    def predict(self, plan: Mapping[str, int]) -> Cost:
        """Return the :class:`Cost` the model would have after ``plan``.

        ``plan`` is not validated here (the search calls this in its inner loop); groups it
        does not name keep all their channels; a removable block it names with 0 costs
        nothing (nor do the layers inside it).
        """
        fractions = {
            name: plan[name] / channels for name, channels in self._channels.items() if name in plan
        }
        macs = float(self._fixed.macs)
        params = float(self._fixed.params)
        nbytes = float(self._fixed.size_bytes)
        terms = self._terms
        removed = [name for name in self._blocks if plan.get(name, 1) == 0]
        if removed:  # their layers go, and what of them no layer term counts
            gone: set[int] = set()
            for name in removed:
                indices, fixed = self._blocks[name]
                gone.update(indices)
                macs -= fixed.macs
                params -= fixed.params
                nbytes -= fixed.size_bytes
            terms = tuple(t for i, t in enumerate(terms) if i not in gone)
        for term in terms:
            out_f = term.layer.outputs.kept_fraction(fractions)
            if term.layer.kind == "dense":
                both = term.layer.inputs.kept_fraction(fractions) * out_f
                macs += term.macs * both
                params += term.weight_params * both + term.channel_params * out_f
                nbytes += term.weight_bytes * both + term.channel_bytes * out_f
            else:
                macs += term.macs * out_f
                params += term.channel_params * out_f
                nbytes += term.channel_bytes * out_f
        return Cost(round(macs), round(params), round(nbytes))

    def matches(self, plan: Mapping[str, int], pruned: nn.Module) -> bool:
        """Return whether :meth:`predict` gives exactly what fvcore and the state dict
        count on ``pruned``, the model ``plan`` really prunes to (MACs, parameters and
        bytes all equal)."""
        return measure_cost(pruned, self.graph.input_shape) == self.predict(plan)

    def ratio(self, plan: Mapping[str, int]) -> float:
        """Return predicted MACs of ``plan`` as a fraction of the unpruned model's."""
        return self.predict(plan).macs / max(self.baseline.macs, 1)


def _block_share(
    name: str, block: nn.Module, macs: int, terms: list[_Term]
) -> tuple[frozenset[int], Cost]:
    """Return which terms lie inside removable block ``name`` and the part of its cost
    they do not count (ops outside any layer, tensors of layers no group touches)."""
    indices = frozenset(i for i, t in enumerate(terms) if t.layer.name.startswith(f"{name}."))
    inside = [terms[i] for i in indices]
    return indices, Cost(
        macs - sum(t.macs for t in inside),
        count_params(block) - sum(t.weight_params + t.channel_params for t in inside),
        size_bytes(block) - sum(t.weight_bytes + t.channel_bytes for t in inside),
    )


def check_plans(graph: PruningGraph, seed: int = 0) -> list[dict[str, int]]:
    """Return plans that exercise every term of an :class:`AnalyticCost`, for
    :meth:`AnalyticCost.matches`: every group at its narrowest, two mixed plans
    (:func:`models.cost.calibration_plans`: widths ramping across the network, on and
    off the channel step), and, where the graph has removable blocks, the narrowest plan
    with every other block removed."""
    narrowest = {g.name: g.min_channels for g in graph.groups}
    plans = [narrowest, *calibration_plans(graph, 3, seed)[1:]]
    if graph.blocks:
        plans.append(narrowest | {name: 0 for name in graph.blocks[::2]})
    return plans
