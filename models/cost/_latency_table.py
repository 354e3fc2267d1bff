"""Per-device latency table: a plan's onnxruntime latency from measured kernels, without
building the pruned model (the lookup tables of HALP and Once-for-All).

What the table times, and the timers, are in :mod:`models.cost._latency_timing`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from torch import nn

from models.cost._kernel_plan import Kernel, KernelPlanner, instantiate
from models.cost._latency_calibration import Calibration, fit_calibration
from models.cost._latency_grid import Grid
from models.cost._latency_timing import STREAM_SHAPE, OnnxTimer, grid_shapes, kernel_grids
from models.cost._layer_shapes import LayerShape
from models.cost._network import Network
from models.errors import ModelsError
from models.prune import PruningGraph

__all__ = ["LatencyTable"]

_MIB = 2**20 / 4  # float32 weights per MiB
_FORMAT = 2  # 2: plain templates for convolutions onnxruntime does not block

_SHALLOW_CACHE = 512
"""Networks with blocks removed a table keeps (one per set of removed blocks a search
tried; rebuilding one takes a pass over the ops)."""


class LatencyTable:
    """Predicts the median onnxruntime CPU latency (ms) of any plan of one model, in well
    under a millisecond, without building the plan's model.

    Built once per model and device: :meth:`build` reads the model's ONNX export, works
    out every kernel onnxruntime can run for it over all plans (convolutions with their
    fused activation and residual add, elementwise ops, poolings, linear layers, and the
    reorders into and out of the blocked NCHWc layout; see ``_kernel_plan``), and times
    each kernel alone at a few channel counts through an :data:`OnnxTimer`. A plan's
    raw prediction (:meth:`predict_raw`) replays onnxruntime's layout choices at the
    plan's channel counts and sums its kernels' latencies, interpolated between the
    measured channel counts, less the cost of running an empty session. A kernel timed
    alone finds its weights in cache, where inside a network it streams them from
    memory: a kernel with a 1x1 output (linear layer, squeeze-excite convolution) is
    held to at least the time a 256 MiB linear layer takes per MiB of weights (measured
    with the shapes), and what spatial convolutions lose to it, like the executor's work
    per run, is left to :meth:`fit`, which calibrates a copy on a few plans measured end
    to end (:func:`calibration_plans`; see :class:`Calibration`). :meth:`predict`
    returns the calibrated latency.

    Ops the table does not time (listed in :attr:`untimed`) end up in the calibration's
    offset, as if their cost did not change with the plan.

    A plan may remove residual blocks (names of the graph's ``blocks`` with width 0):
    their ops drop out and the next op reads the block's input
    (:meth:`Network.without`, which needs the export's module scopes:
    :attr:`knows_depth`); the kernels around the gap are replayed as onnxruntime runs
    them in the shallower model.

    Instances are immutable and safe to share between threads.
    """

    def __init__(
        self,
        network: Network,
        groups: Sequence[tuple[str, int]],
        block: int,
        batch_size: int,
        grids: Mapping[LayerShape, Grid],
        overhead_ms: float,
        stream_ms_per_mib: float,
        calibration: Calibration | None = None,
    ) -> None:
        self.network = network
        self.groups = tuple(groups)
        self.block = block
        self.batch_size = batch_size
        self.overhead_ms = overhead_ms
        self.stream_ms_per_mib = stream_ms_per_mib
        self.calibration = calibration or Calibration()
        self._grids = dict(grids)
        self._entries: dict[int, tuple[Grid, float, bool]] = {}
        self._planner = KernelPlanner(network, block)
        self._shallow: dict[tuple[str, ...], Network] = {}  # removed blocks -> network
        self._names = frozenset(name for name, _ in self.groups)
        position = {name: i for i, (name, _) in enumerate(self.groups)}
        self._full = np.array([c for _, c in self.groups], dtype=np.float64)
        self._base = np.array([t.channels for t in network.tensors], dtype=np.float64)
        self._coef = np.zeros((len(network.tensors), len(self.groups)))
        for i, t in enumerate(network.tensors):
            for group, n in t.by_group:
                self._base[i] -= n
                self._coef[i, position[group]] += n / self._full[position[group]]

    @staticmethod
    def shapes_to_measure(
        model: nn.Module,
        graph: PruningGraph,
        *,
        batch_size: int = 1,
        channel_block: int | None = None,
    ) -> list[LayerShape]:
        """Return the distinct layer shapes :meth:`build` times for this model.

        Shapes are deduplicated across layers; each kernel template is measured on a
        grid of at most :data:`~models.cost._latency_timing.GRID_POINTS` channel counts
        per axis (padded to the block where onnxruntime pads), and other counts are
        interpolated. The first shape times an empty session (subtracted from every
        kernel), the second a linear layer with 256 MiB of weights (how fast weights
        stream from memory).

        Args:
            model: the unpruned network (exported to ONNX and run once; not modified).
            graph: its :class:`~models.prune.PruningGraph`.
            batch_size: the batch the table predicts for (given to ``to_onnx``).
            channel_block: onnxruntime's NCHWc block on the device that will run the
                shapes; this machine's (:func:`onnxruntime_channel_block`) if None.

        Returns:
            The shapes, the same on every call.

        Raises:
            ModelsError: the model cannot be exported, or its export not read.
        """
        del batch_size  # the shapes do not depend on it; their models do (``to_onnx``)
        return grid_shapes(kernel_grids(model, graph, channel_block)[2])

    @classmethod
    def build(
        cls,
        model: nn.Module,
        graph: PruningGraph,
        timer: OnnxTimer,
        *,
        batch_size: int = 1,
        channel_block: int | None = None,
    ) -> LatencyTable:
        """Time every shape of :meth:`shapes_to_measure` with one call of ``timer``.

        Args:
            model: the unpruned network (not modified).
            graph: its :class:`~models.prune.PruningGraph`.
            timer: times the one-layer models, in one batch.
            batch_size: the batch the table predicts for.
            channel_block: the device's NCHWc block; this machine's if None.

        Returns:
            The uncalibrated table.

        Raises:
            ModelsError: the model cannot be exported or read, or the timer returned
                the wrong number of latencies.
        """
        network, block, axes = kernel_grids(model, graph, channel_block)
        models = [shape.to_onnx(batch_size) for shape in grid_shapes(axes)]
        times = [float(t) for t in timer(models)]
        if len(times) != len(models):
            raise ModelsError(f"the timer returned {len(times)} latencies for {len(models)} models")
        grids, at = {}, 2
        for template, axis in axes.items():
            size = int(np.prod([len(a) for a in axis]))
            grids[template] = Grid(axis, tuple(times[at : at + size]))
            at += size
        groups = [(g.name, g.channels) for g in graph.groups]
        stream = (
            max(times[1] - times[0], 0.0)
            * _MIB
            / (STREAM_SHAPE.in_channels * STREAM_SHAPE.out_channels)
        )
        return cls(network, groups, block, batch_size, grids, times[0], stream)

    @property
    def untimed(self) -> dict[str, int]:
        """ONNX op types in the network the table does not time, with their counts."""
        return self.network.untimed

    @property
    def shape_count(self) -> int:
        """How many layer shapes were measured (the two reference shapes included)."""
        return 2 + sum(len(g.values) for g in self._grids.values())

    @property
    def knows_depth(self) -> bool:
        """Whether the table predicts plans that remove residual blocks (its network's
        ops know their modules: :attr:`Network.scoped`)."""
        return self.network.scoped

    def _network(self, plan: Mapping[str, int]) -> Network:
        """Return the network ``plan`` runs: without the blocks it removes (names that
        are no group, with width 0)."""
        removed = tuple(sorted(n for n, w in plan.items() if w == 0 and n not in self._names))
        if not removed:
            return self.network
        found = self._shallow.get(removed)
        if found is None:
            if len(self._shallow) >= _SHALLOW_CACHE:
                self._shallow.clear()
            found = self._shallow[removed] = self.network.without(removed)
        return found

    def _channels(self, plan: Mapping[str, int]) -> list[int]:
        widths = np.array([plan.get(name, c) for name, c in self.groups], dtype=np.float64)
        channels = np.rint(self._base + self._coef @ widths) if len(widths) else self._base
        return [max(1, int(c)) for c in channels]

    def breakdown(self, plan: Mapping[str, int]) -> list[tuple[LayerShape, float]]:
        """Return every kernel ``plan`` runs, in order, with its share of the raw sum (ms).

        Raises:
            ModelsError: a kernel the table has no measurements for.
        """
        return [
            (instantiate(template, coords), self._kernel(template, coords)[0])
            for template, coords in self._kernels(plan)
        ]

    def _kernels(self, plan: Mapping[str, int]) -> list[Kernel]:
        return self._planner.kernels(self._channels(plan), self._network(plan))

    def _kernel(self, template: LayerShape, coords: tuple[int, ...]) -> tuple[float, float]:
        """Return a kernel's latency (ms) and the weights of a spatial convolution it
        streams (float32 values; 0 for any other kernel).

        A kernel with a 1x1 output (a linear layer, a squeeze-excite convolution) reads
        each weight once: inside a network it streams them from memory, so it takes at
        least as long as that (:attr:`stream_ms_per_mib`). A spatial convolution's
        weights are left to the calibration (``per_mb``).
        """
        entry = self._entries.get(id(template))
        if entry is None:  # cached by identity: the planner makes each template once
            grid = self._grids.get(template)
            if grid is None:
                raise ModelsError(
                    f"the table has no measurements for kernel {template.key}; "
                    "was it built for another model or onnxruntime?"
                )
            streams = template.op == "linear" or template.output_hw() == (1, 1)
            entry = self._entries[id(template)] = (grid, _weights_per_coord(template), streams)
        grid, factor, streams = entry
        ms = max(grid.at(coords) - self.overhead_ms, 0.0)
        if not factor:
            return ms, 0.0
        weights = factor * (coords[0] * coords[-1] if len(coords) == 2 else coords[0])
        if streams:
            return max(ms, weights / _MIB * self.stream_ms_per_mib), 0.0
        return ms, weights

    def _terms(self, plan: Mapping[str, int]) -> tuple[float, float]:
        """Return ``plan``'s kernel sum (ms) and its spatial convolutions' weights (MiB)."""
        total = weights = 0.0
        for template, coords in self._kernels(plan):
            ms, w = self._kernel(template, coords)
            total += ms
            weights += w
        return total, weights / _MIB

    def predict_raw(self, plan: Mapping[str, int]) -> float:
        """Return the uncalibrated latency of ``plan`` in ms: the sum of its kernels.

        ``plan`` maps group names to channels kept; groups it does not name keep all
        of theirs. It is not validated (this runs in the search's inner loop).

        Raises:
            ModelsError: a kernel the table has no measurements for.
        """
        return self._terms(plan)[0]

    def predict(self, plan: Mapping[str, int]) -> float:
        """Return the calibrated latency of ``plan`` in ms (see :class:`Calibration`).

        Raises:
            ModelsError: a kernel the table has no measurements for.
        """
        return self.calibration.apply(*self._terms(plan))

    def fit(self, samples: Sequence[tuple[Mapping[str, int], float]]) -> LatencyTable:
        """Return a copy calibrated on plans measured end to end (see :func:`fit_calibration`).

        Args:
            samples: ``(plan, measured median ms)`` pairs, e.g. of
                :func:`calibration_plans`; include the unpruned model.

        Returns:
            The calibrated copy; this table is unchanged.

        Raises:
            ModelsError: no samples, or a non-positive measurement.
        """
        terms = [self._terms(plan) for plan, _ in samples]
        calibration = fit_calibration(
            [k for k, _ in terms], [w for _, w in terms], [float(ms) for _, ms in samples]
        )
        return LatencyTable(
            self.network,
            self.groups,
            self.block,
            self.batch_size,
            self._grids,
            self.overhead_ms,
            self.stream_ms_per_mib,
            calibration,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the table as JSON-able values (for a cache or a database row)."""
        return {
            "format": _FORMAT,
            "block": self.block,
            "batch_size": self.batch_size,
            "overhead_ms": self.overhead_ms,
            "stream_ms_per_mib": self.stream_ms_per_mib,
            "calibration": asdict(self.calibration),
            "groups": [list(g) for g in self.groups],
            "network": self.network.to_dict(),
            "kernels": [
                {"shape": t.to_dict(), "axes": [list(a) for a in g.axes], "ms": list(g.values)}
                for t, g in self._grids.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Rebuild a table written by :meth:`to_dict`.

        Raises:
            ModelsError: the data is not a table of this format.
        """
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ModelsError(f"not a latency table of format {_FORMAT}")
        grids = {
            LayerShape.from_dict(k["shape"]): Grid(
                tuple(tuple(int(v) for v in a) for a in k["axes"]), tuple(k["ms"])
            )
            for k in data["kernels"]
        }
        return cls(
            Network.from_dict(data["network"]),
            [(str(name), int(c)) for name, c in data["groups"]],
            int(data["block"]),
            int(data["batch_size"]),
            grids,
            float(data["overhead_ms"]),
            float(data["stream_ms_per_mib"]),
            Calibration(**data["calibration"]),
        )


def _weights_per_coord(template: LayerShape) -> float:
    """Return the weights per unit of a kernel's coordinates (product of in and out for
    a dense kernel, channels for a depthwise one), or 0 for a kernel without weights."""
    if template.op == "linear":
        return 1.0
    if template.op != "conv":
        return 0.0
    area = template.kernel[0] * template.kernel[1]
    return float(area) if template.groups == 0 else area / template.groups
