"""What a latency table times, and with what: the kernel shapes of a model over their
channel grids (after two reference shapes), and the :data:`OnnxTimer` that times them in
one batch (:func:`onnxruntime_timer` here; a remote device agent elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from models.cost._kernel_plan import KernelPlanner, instantiate
from models.cost._latency import measure_onnx_latency
from models.cost._latency_grid import Grid, grid_axis, reachable_channels
from models.cost._layer_shapes import LayerShape, onnxruntime_channel_block
from models.cost._network import Network
from models.cost._onnx_network import read_network
from models.prune import PruningGraph

__all__ = [
    "GRID_POINTS",
    "STREAM_SHAPE",
    "OnnxTimer",
    "grid_shapes",
    "kernel_grids",
    "onnxruntime_timer",
]

OnnxTimer = Callable[[Sequence[bytes]], Sequence[float]]
"""Given serialized ONNX models, returns the median latency in ms of each, in order.

Where and how they run is the caller's choice: here with :func:`onnxruntime_timer`, or
on a remote device agent in one batch."""

GRID_POINTS = {1: 5, 2: 4}
"""Grid values measured per axis: 5 for kernels of one channel count (depthwise
convolutions, elementwise ops, poolings, reorders), 4 per axis for dense convolutions
and linear layers (16 points; bilinear interpolation on padded channels stays within
about 2 % of a measured convolution at the 90th percentile)."""

_OVERHEAD = LayerShape("unary", 1, 1, function="Relu")  # one run of a trivial model
STREAM_SHAPE = LayerShape("linear", 8192, 8192)  # 256 MiB of weights: larger than any cache


def onnxruntime_timer(
    *,
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 25,
    rounds: int = 1,
    optimization: str = "all",
) -> OnnxTimer:
    """Return an :data:`OnnxTimer` that times models here with :func:`measure_onnx_latency`.

    Args:
        threads: intra-op threads onnxruntime may use.
        warmup: untimed runs per model and round.
        repeats: timed runs per model and round.
        rounds: passes over all the models; each model reports its lowest median, since
            other processes only ever add time.
        optimization: onnxruntime's graph optimization level (see ``ONNX_OPTIMIZATIONS``).

    Returns:
        The timer.
    """

    def timer(models: Sequence[bytes]) -> list[float]:
        best = [float("inf")] * len(models)
        for _ in range(max(rounds, 1)):
            for i, model in enumerate(models):
                latency = measure_onnx_latency(
                    model,
                    threads=threads,
                    warmup=warmup,
                    repeats=repeats,
                    optimization=optimization,
                )
                best[i] = min(best[i], latency.median_ms)
        return best

    return timer


def kernel_grids(
    model: nn.Module, graph: PruningGraph, channel_block: int | None
) -> tuple[Network, int, dict[LayerShape, tuple[tuple[int, ...], ...]]]:
    """Return the network, the NCHWc block and every kernel template's grid axes."""
    from models.io import onnx_model_bytes  # importing models.cost must not need models.io

    network = read_network(model, graph, onnx_model_bytes(model, graph.input_shape))
    block = channel_block or onnxruntime_channel_block()
    widths = {g.name: (g.channels, g.allowed_widths()) for g in graph.groups}
    values = [reachable_channels(t.channels, t.by_group, widths) for t in network.tensors]
    # with every removable block gone, fusions across the gaps appear too
    shallow = [network.without(graph.blocks)] if graph.blocks and network.scoped else []
    variants = KernelPlanner(network, block).variants(values, shallow)
    axes = {
        template: tuple(grid_axis(v, GRID_POINTS[len(sets)], block) for v in sets)
        for template, sets in variants.items()
    }
    return network, block, axes


def grid_shapes(axes: Mapping[LayerShape, tuple[tuple[int, ...], ...]]) -> list[LayerShape]:
    """Return the two reference shapes, then every template at every point of its grid."""
    return [_OVERHEAD, STREAM_SHAPE] + [
        instantiate(template, point)
        for template, axis in axes.items()
        for point in Grid(axis, ()).points()
    ]
