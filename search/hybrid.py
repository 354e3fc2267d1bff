"""A plan and a hybrid sequence together: which steps run when widths are given.

A sequence (``pruning.sequence``) runs all its steps in order on the unpruned model.
Given channel widths as well (a plan, a ratio, or a search's candidate), those widths
stand for the sequence's channel steps: the plan is applied, then the kernel and weight
steps, in their order.

A search's candidates are such plans, pruned at once: a weight step (magnitude pruning
of LSTM/GRU weights) zeroes its share of each recurrent matrix when the candidate is
built, for the trials as for the final fine-tune (only ``inferprune apply`` with a
fine-tune ramps it along AGP). Their removed kernels and weights are zeros of their
weights (:func:`models.prune.zeroed_kernel_masks` and
:func:`models.prune.zeroed_recurrent_masks` read them back), so a candidate's rung
checkpoint carries its masks with its weights; :func:`zeros_held` keeps the zeros
while it trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from models.cost import Cost, SparseCost, measure_cost, measure_sparse_cost
from models.criteria import Calibration
from models.prune import (
    KernelMasks,
    Plan,
    PruningGraph,
    PruningStep,
    SparsePruned,
    apply_plan,
    apply_sequence,
    complete_plan,
    keep_kernels_masked,
    keep_recurrent_masked,
    zeroed_kernel_masks,
    zeroed_recurrent_masks,
)

__all__ = [
    "has_kernel_steps",
    "has_sparse_steps",
    "has_weight_steps",
    "kernels_removed",
    "measure_candidate_cost",
    "prune_hybrid",
    "sparse_record",
    "zeros_held",
]


class _Step(Protocol):
    @property
    def granularity(self) -> str: ...


def has_kernel_steps(sequence: Sequence[_Step] | None) -> bool:
    """Return whether ``sequence`` (engine steps or the spec's) has a kernel step."""
    return any(step.granularity == "kernel" for step in sequence or ())


def has_weight_steps(sequence: Sequence[_Step] | None) -> bool:
    """Return whether ``sequence`` has a weight step (recurrent weights by magnitude)."""
    return any(step.granularity == "weight" for step in sequence or ())


def has_sparse_steps(sequence: Sequence[_Step] | None) -> bool:
    """Return whether ``sequence`` leaves zeros in dense layers (kernel or weight steps)."""
    return has_kernel_steps(sequence) or has_weight_steps(sequence)


@contextlib.contextmanager
def _held(model: nn.Module, kernels: bool, weights: bool) -> Iterator[nn.Module]:
    with contextlib.ExitStack() as stack:
        if kernels:
            stack.enter_context(keep_kernels_masked(model, zeroed_kernel_masks(model)))
        if weights:
            stack.enter_context(keep_recurrent_masked(model, zeroed_recurrent_masks(model)))
        yield model


def zeros_held(
    model: nn.Module, sequence: Sequence[_Step] | None
) -> contextlib.AbstractContextManager[nn.Module]:
    """Return a context that keeps ``model``'s removed kernels and recurrent weights at
    zero while it trains, when ``sequence`` has kernel or weight steps (a no-op otherwise).

    The kernels held are the ones that are all zeros on entry
    (:func:`models.prune.zeroed_kernel_masks`): those the kernel steps removed; the
    recurrent weights held are the LSTM/GRU weights that are zero on entry
    (:func:`models.prune.zeroed_recurrent_masks`): those the weight steps removed.
    """
    kernels, weights = has_kernel_steps(sequence), has_weight_steps(sequence)
    if not (kernels or weights):
        return contextlib.nullcontext(model)
    return _held(model, kernels, weights)


def kernels_removed(model: nn.Module, sequence: Sequence[_Step] | None) -> KernelMasks | None:
    """Return the kernels ``model`` holds as zeros when ``sequence`` has kernel steps (what
    its checkpoint stores packed), else None (a dense model)."""
    return zeroed_kernel_masks(model) if has_kernel_steps(sequence) else None


def measure_candidate_cost(
    model: nn.Module, input_shape: Sequence[int], sequence: Sequence[_Step] | None
) -> Cost:
    """Return ``model``'s dense cost, as a :class:`models.cost.SparseCost` (non-zero
    parameters and effective MACs beside the dense figures) when ``sequence`` has kernel
    or weight steps. Budgets are always held to the dense figures: what dense runtimes
    run."""
    if has_sparse_steps(sequence):
        return measure_sparse_cost(model, input_shape)
    return measure_cost(model, input_shape)


def sparse_record(cost: Cost) -> dict[str, int]:
    """Return ``nonzero_params`` and ``effective_macs`` of a :class:`SparseCost` for a
    report (nothing for a dense cost)."""
    if not isinstance(cost, SparseCost):
        return {}
    return {"nonzero_params": cost.nonzero_params, "effective_macs": cost.effective_macs}


def prune_hybrid(
    model: nn.Module,
    plan: Plan | None,
    sequence: Sequence[PruningStep] | None,
    criterion: str,
    calib: Calibration | None,
    *,
    graph: PruningGraph,
    seed: int = 0,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> SparsePruned:
    """Return ``model`` pruned to ``plan`` and then by the kernel and weight steps of
    ``sequence`` (in their order; weight steps at once), or by the whole ``sequence``
    when there is no plan.

    Args:
        model: the unpruned model (not modified).
        plan: channels kept per group, or None to let the sequence's channel steps decide.
        sequence: the hybrid steps, or None for the plan alone.
        criterion: ranks the plan's channels.
        calib: calibration batches for data-driven criteria.
        graph: the unpruned model's graph.
        seed: seeds random criteria.
        scores: the plan's channel scores, when computed already (``criterion`` and
            ``calib`` are then not used for the plan).

    Returns:
        The :class:`SparsePruned` model with the full plan (every group's width).

    Raises:
        ModelsError: neither a plan nor a sequence, or a step that cannot be applied.
        PlanError: a plan the graph does not allow.
    """
    from models.errors import ModelsError

    shape = graph.input_shape
    if plan is None and not sequence:
        raise ModelsError("give a plan, a sequence, or both")
    if plan is None:
        assert sequence is not None
        return apply_sequence(model, sequence, calib, input_shape=shape, graph=graph, seed=seed)
    pruned = apply_plan(
        model, plan, criterion, calib, input_shape=shape, graph=graph, seed=seed, scores=scores
    )
    full = complete_plan(plan, graph)
    sparse_steps = [s for s in sequence or () if s.granularity != "channel"]
    if not sparse_steps:
        return SparsePruned(pruned, full, KernelMasks())
    if graph.removed_blocks(plan):
        raise ModelsError(
            "kernel and weight steps prune the layers of the whole model; a plan that "
            "removes blocks cannot be followed by them (keep the blocks, or drop the steps)"
        )
    return apply_sequence(pruned, sparse_steps, calib, input_shape=shape, graph=graph, seed=seed)
