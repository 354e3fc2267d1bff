"""The network as the latency table sees it: its ops in order, and how many channels of
each tensor every pruning group owns. Independent of any model object, and JSON-able."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Network", "OpNode", "TensorInfo"]


@dataclass(frozen=True)
class TensorInfo:
    """One activation tensor of the unpruned network.

    Attributes:
        channels: its channels (features, for a 2-D tensor) in the unpruned network.
        by_group: ``(group, n)``: ``n`` of the channels shrink with that group, as in
            :class:`~models.prune.DimCoverage`; the rest never change.
        height: spatial height (1 for a 2-D tensor).
        width: spatial width.
        spatial: True for an (N, C, H, W) tensor.
    """

    channels: int
    by_group: tuple[tuple[str, int], ...] = ()
    height: int = 1
    width: int = 1
    spatial: bool = True


@dataclass(frozen=True)
class OpNode:
    """One op of the network after the fusions onnxruntime always makes.

    Attributes:
        op: ``conv``, ``linear``, ``unary``, ``add`` (same-shaped tensors), ``mul``
            (same-shaped tensors), ``scale`` (a tensor times a per-channel vector),
            ``pool``, ``reshape`` (free, but reads the plain layout) or ``other``
            (an op the table does not time).
        inputs: indices of the activation tensors it reads (for a ``scale``, the scaled
            tensor first, then the per-channel vector).
        output: index of the tensor it writes.
        function: a convolution's fused activation; a unary op's function (``SiLU``
            for ``x * sigmoid(x)``); a pooling's or an untimed op's ONNX type.
        kernel: (kh, kw) of a convolution or pooling.
        stride: (sh, sw).
        padding: (top, left, bottom, right).
        dilation: (dh, dw).
        groups: a convolution's groups in the unpruned network.
        depthwise: a convolution with one filter per channel (its groups follow them).
    """

    op: str
    inputs: tuple[int, ...]
    output: int
    function: str = ""
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    depthwise: bool = False


@dataclass(frozen=True)
class Network:
    """The ops of one network and its tensors, independent of any model object.

    Attributes:
        tensors: every activation tensor; ``tensors[0]`` is the input.
        ops: the ops in execution order.
        outputs: indices of the network's output tensors.
        uses: for each tensor, how many ops read it (plus one for a network output).
    """

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpNode, ...]
    outputs: tuple[int, ...]
    uses: tuple[int, ...]

    @property
    def untimed(self) -> dict[str, int]:
        """ONNX op types the table does not time, with how often each occurs."""
        return dict(Counter(op.function for op in self.ops if op.op == "other"))

    def to_dict(self) -> dict[str, Any]:
        """Return the network as JSON-able values."""
        return {
            "tensors": [_plain(asdict(t)) for t in self.tensors],
            "ops": [_plain(asdict(o)) for o in self.ops],
            "outputs": list(self.outputs),
            "uses": list(self.uses),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Network:
        """Rebuild a network written by :meth:`to_dict`."""
        tensors = tuple(_record(TensorInfo, t) for t in data["tensors"])
        ops = tuple(_record(OpNode, o) for o in data["ops"])
        return cls(tensors, ops, tuple(data["outputs"]), tuple(data["uses"]))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
        for k, v in values.items()
    }


def _record(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key in names:
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[key] = value
    return cls(**values)
