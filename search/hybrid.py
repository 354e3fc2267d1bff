"""A plan and a hybrid sequence together: which steps run when widths are given.

A sequence (``pruning.sequence``) runs all its steps in order on the unpruned model.
Given channel widths as well (a plan, a ratio, or a search's candidate), those widths
stand for the sequence's channel steps: the plan is applied, then the kernel steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from models.criteria import Calibration
from models.prune import (
    KernelMasks,
    Plan,
    PruningGraph,
    PruningStep,
    SparsePruned,
    apply_plan,
    apply_sequence,
)

__all__ = ["prune_hybrid"]


def prune_hybrid(
    model: nn.Module,
    plan: Plan | None,
    sequence: Sequence[PruningStep] | None,
    criterion: str,
    calib: Calibration | None,
    *,
    graph: PruningGraph,
    seed: int = 0,
) -> SparsePruned:
    """Return ``model`` pruned to ``plan`` and then by the kernel steps of ``sequence``,
    or by the whole ``sequence`` when there is no plan.

    Args:
        model: the unpruned model (not modified).
        plan: channels kept per group, or None to let the sequence's channel steps decide.
        sequence: the hybrid steps, or None for the plan alone.
        criterion: ranks the plan's channels.
        calib: calibration batches for data-driven criteria.
        graph: the unpruned model's graph.
        seed: seeds random criteria.

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
    pruned = apply_plan(model, plan, criterion, calib, input_shape=shape, graph=graph, seed=seed)
    full = Plan({g.name: plan.width(g) for g in graph.groups})
    kernel_steps = [s for s in sequence or () if s.granularity == "kernel"]
    if not kernel_steps:
        return SparsePruned(pruned, full, KernelMasks())
    return apply_sequence(pruned, kernel_steps, calib, input_shape=shape, graph=graph, seed=seed)
