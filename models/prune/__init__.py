"""Which channels move together, and removing exactly as many as a plan says.

A :class:`PruningGraph` (from :func:`build_pruning_graph`) lists a model's prunable
:class:`ChannelGroup` s, found with Torch-Pruning's DependencyGraph and named by the
module path of their root layer. A :class:`Plan` maps group names to the channels
kept; :func:`apply_plan` returns a physically smaller copy of the model.
"""

from __future__ import annotations

from models.prune._apply import CALIBRATION_BATCHES, apply_plan, score_channels
from models.prune._global import global_magnitude_widths
from models.prune._graph import (
    ChannelGroup,
    DimCoverage,
    LayerCoverage,
    PruningGraph,
    build_pruning_graph,
    find_output_layer,
    output_channels,
)
from models.prune._plan import Plan, uniform_plan, validate_plan

__all__ = [
    "CALIBRATION_BATCHES",
    "ChannelGroup",
    "DimCoverage",
    "LayerCoverage",
    "Plan",
    "PruningGraph",
    "apply_plan",
    "build_pruning_graph",
    "find_groups",
    "find_output_layer",
    "global_magnitude_widths",
    "output_channels",
    "score_channels",
    "uniform_plan",
    "validate_plan",
]


def find_groups(
    model: object, input_shape: tuple[int, int, int], round_to: int = 8
) -> tuple[ChannelGroup, ...]:
    """Return the prunable groups of ``model`` (shorthand for ``build_pruning_graph``)."""
    from torch import nn

    assert isinstance(model, nn.Module)
    return build_pruning_graph(model, input_shape, round_to=round_to).groups
