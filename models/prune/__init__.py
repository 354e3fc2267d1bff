"""Which channels move together, and removing exactly as many as a plan says.

A :class:`PruningGraph` (from :func:`build_pruning_graph`) lists a model's prunable
:class:`ChannelGroup` s, found with Torch-Pruning's DependencyGraph and named by the
module path of their root layer. A :class:`Plan` maps group names to the channels
kept; :func:`apply_plan` returns a physically smaller copy of the model. A model with
LSTM/GRU layers (input (T, F)) gets one group per recurrent layer instead, its hidden
units (the gate rows of a unit go together), grouped and cut without Torch-Pruning;
they are ranked by :data:`RECURRENT_CRITERIA`. :class:`AgpRecurrentMasking` instead zeroes
single input-to-hidden and hidden-to-hidden weights by magnitude along the AGP curve
(:func:`agp_sparsity`, :func:`magnitude_masks`) while a model fine-tunes, and
:func:`keep_recurrent_masked` holds such zeros while a model trains.

Depth: :func:`removable_blocks` finds residual blocks that can go whole (their branch
zeroed, they pass their input through; :attr:`PruningGraph.blocks`) and
:func:`remove_blocks` replaces them by ``nn.Identity``; a plan removes one by giving it
width 0, and :func:`spread_removal` picks which blocks of a stage go.

Kernel granularity: :func:`kernel_masks` picks single k×k kernels to remove
(:class:`KernelMasks`), :func:`zero_kernels` / :func:`keep_kernels_masked` enforce them,
and :func:`apply_sequence` runs a hybrid sequence of channel, kernel and (recurrent)
weight :class:`PruningStep` s, turning columns no filter reads into channel cuts.
"""

from __future__ import annotations

from models.prune._apply import CALIBRATION_BATCHES, apply_plan, score_channels
from models.prune._depth import (
    block_containers,
    block_contributions,
    removable_blocks,
    removal_order,
    remove_blocks,
    spread_removal,
)
from models.prune._global import global_magnitude_widths
from models.prune._graph import (
    ChannelGroup,
    DimCoverage,
    LayerCoverage,
    PruningGraph,
    build_pruning_graph,
)
from models.prune._kernels import (
    KernelMasks,
    keep_kernels_masked,
    kernel_layers,
    kernel_masks,
    score_kernels,
    zero_kernels,
    zeroed_kernel_masks,
)
from models.prune._plan import Plan, complete_plan, uniform_plan, validate_plan
from models.prune._recurrent import RECURRENT_CRITERIA
from models.prune._recurrent_masks import (
    AgpRecurrentMasking,
    RecurrentWeightMasks,
    agp_sparsity,
    has_recurrent_weights,
    keep_recurrent_masked,
    magnitude_masks,
    recurrent_weights,
    zeroed_recurrent_masks,
)
from models.prune._sequence import (
    PruningStep,
    SparsePruned,
    apply_sequence,
    cut_dead_channels,
    weight_step,
    widths_of,
)
from models.prune._tracing import find_output_layer, output_channels

__all__ = [
    "AgpRecurrentMasking",
    "CALIBRATION_BATCHES",
    "ChannelGroup",
    "DimCoverage",
    "KernelMasks",
    "LayerCoverage",
    "Plan",
    "PruningGraph",
    "PruningStep",
    "RECURRENT_CRITERIA",
    "RecurrentWeightMasks",
    "SparsePruned",
    "agp_sparsity",
    "apply_plan",
    "apply_sequence",
    "block_containers",
    "block_contributions",
    "build_pruning_graph",
    "complete_plan",
    "cut_dead_channels",
    "find_groups",
    "find_output_layer",
    "global_magnitude_widths",
    "has_recurrent_weights",
    "keep_recurrent_masked",
    "keep_kernels_masked",
    "kernel_layers",
    "kernel_masks",
    "magnitude_masks",
    "output_channels",
    "recurrent_weights",
    "removable_blocks",
    "remove_blocks",
    "removal_order",
    "score_channels",
    "score_kernels",
    "spread_removal",
    "uniform_plan",
    "validate_plan",
    "weight_step",
    "widths_of",
    "zero_kernels",
    "zeroed_kernel_masks",
    "zeroed_recurrent_masks",
]


def find_groups(
    model: object, input_shape: tuple[int, ...], round_to: int = 8
) -> tuple[ChannelGroup, ...]:
    """Return the prunable groups of ``model`` (shorthand for ``build_pruning_graph``)."""
    from torch import nn

    assert isinstance(model, nn.Module)
    return build_pruning_graph(model, input_shape, round_to=round_to).groups
