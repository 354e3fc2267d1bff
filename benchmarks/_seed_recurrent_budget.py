"""Budgets of part (c) of ``seed_methods.py``: matching a parameter target, and counting.

Hidden-unit pruning matches a target by its widths (:func:`unit_widths`), AGP weight
pruning by its sparsity (:func:`weight_sparsity`); :func:`recurrent_sparse_cost` counts
what either left, zero recurrent weights included.
"""

from __future__ import annotations

from itertools import product

import torch
from torch import nn

from models.cost import AnalyticCost, count_params, measure_sparse_cost
from models.prune import Plan, PruningGraph

__all__ = ["recurrent_sparse_cost", "unit_widths", "weight_sparsity"]


def unit_widths(model: nn.Module, graph: PruningGraph, target: int) -> Plan:
    """Return the widest near-uniform hidden widths whose model has at most ``target``
    parameters.

    Every layer keeps ``h`` or ``h + 1`` units; of all such plans the one with the most
    parameters not above ``target`` is returned (the narrowest one if none fits). The
    count is :class:`models.cost.AnalyticCost`'s, exact for recurrent stacks.
    """
    cost = AnalyticCost(model, graph)
    widest = min(g.channels for g in graph.groups)
    best: tuple[int, Plan] | None = None
    for h in range(1, widest + 1):
        for extra in product((0, 1), repeat=len(graph.groups)):
            widths = {
                g.name: min(h + e, g.channels) for g, e in zip(graph.groups, extra, strict=True)
            }
            plan = Plan(widths)
            params = cost.predict(plan).params
            fits = params <= target
            if best is None or (fits and (best[0] > target or params > best[0])):
                best = (params, plan)
    assert best is not None
    return best[1]


def _masked_weights(model: nn.Module) -> list[torch.Tensor]:
    """Return the recurrent weight matrices AGP masks (``weight_ih_l*``/``weight_hh_l*``)."""
    return [
        p
        for m in model.modules()
        if isinstance(m, nn.LSTM | nn.GRU)
        for n, p in m.named_parameters(recurse=False)
        if n.startswith(("weight_ih_l", "weight_hh_l"))
    ]


def weight_sparsity(model: nn.Module, target: int) -> float:
    """Return the smallest per-matrix sparsity at which ``model`` keeps at most ``target``
    non-zero parameters, counting as :func:`models.prune.magnitude_masks` rounds.

    Raises:
        ValueError: even a sparsity just below 1 leaves more than ``target`` non-zeros.
    """
    sizes = [w.numel() for w in _masked_weights(model)]
    others = count_params(model) - sum(sizes)

    def nonzero(s: float) -> int:
        return others + sum(n - round(s * n) for n in sizes)

    low, high = 0.0, 1.0 - 1e-9
    if nonzero(high) > target:
        raise ValueError(f"masking recurrent weights cannot reach {target} non-zero parameters")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if nonzero(mid) > target else (low, mid)
    return high


def recurrent_sparse_cost(model: nn.Module, shape: tuple[int, int]) -> dict[str, int]:
    """Return params, non-zero params, dense MACs and effective MACs of one sequence
    (:func:`models.cost.measure_sparse_cost`: effective MACs are the dense ones less one
    MAC per exactly-zero recurrent weight per time step, what a runtime skipping zero
    weights would do)."""
    cost = measure_sparse_cost(model, shape)
    return {
        "params": cost.params,
        "nonzero_params": cost.nonzero_params,
        "macs": cost.macs,
        "effective_macs": cost.effective_macs,
    }
