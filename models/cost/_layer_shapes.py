"""One distinct layer configuration, and the one-layer ONNX model that times it."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from models.errors import ModelsError

__all__ = ["LAYER_OPS", "NCHWC_DOMAIN", "LayerShape", "onnxruntime_channel_block"]

LAYER_OPS: tuple[str, ...] = (
    "conv",
    "linear",
    "unary",
    "add",
    "scale",
    "pool",
    "reorder_in",
    "reorder_out",
)
"""What a :class:`LayerShape` can be: a convolution, a fully-connected layer, an
elementwise function, the addition of a same-shaped tensor, a per-channel scale
(squeeze-excite), a pooling, or onnxruntime's reorder into or out of its blocked layout."""

NCHWC_DOMAIN = "com.microsoft.nchwc"
"""onnxruntime's operator domain for its blocked (NCHWc) CPU kernels."""

_ONNX_OPSET = 17
_FILL = 0.01  # weights' value: latency does not depend on it; nonzero keeps kernels honest
_UNARY = ("Relu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "LeakyRelu", "SiLU")
_ACTIVATION_PARAMS: dict[str, list[float]] = {
    "Clip": [0.0, 6.0],
    "LeakyRelu": [0.01],
    "HardSigmoid": [0.2, 0.5],
}
_POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


@dataclass(frozen=True)
class LayerShape:
    """One layer configuration whose latency the table measures once and reuses.

    Channel counts are those the kernel really processes: on the ``nchwc`` layout they
    are padded to the block (except a convolution's input narrower than the block, which
    onnxruntime reads unblocked); reorders count the logical channels.

    Attributes:
        op: one of :data:`LAYER_OPS`.
        in_channels: channels (or features) read.
        out_channels: channels (or features) written; ``in_channels`` for channel-wise ops.
        height: input height (1 for ``linear``).
        width: input width (1 for ``linear``).
        kernel: (kh, kw) of a convolution or pooling.
        stride: (sh, sw).
        padding: (top, left, bottom, right).
        dilation: (dh, dw).
        groups: a convolution's groups (``in_channels`` for a depthwise one).
        function: a convolution's fused activation (an ONNX op type, or ""); the
            function of a ``unary`` op (an ONNX op type or ``SiLU``); ``Add`` or ``Mul``
            for an ``add`` of two same-shaped tensors; the ONNX op type of a ``pool``.
        residual: a convolution that also adds a tensor of its output's shape (the
            residual add onnxruntime fuses into it).
        layout: ``nchw`` (plain ONNX ops) or ``nchwc`` (onnxruntime's blocked kernels).
        block: the NCHWc channel block (1 on the ``nchw`` layout, except reorders).
    """

    op: str
    in_channels: int
    out_channels: int
    height: int = 1
    width: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    function: str = ""
    residual: bool = False
    layout: str = "nchw"
    block: int = 1

    def __post_init__(self) -> None:
        if self.op not in LAYER_OPS:
            raise ModelsError(f"unknown layer op {self.op!r}; choose one of {', '.join(LAYER_OPS)}")
        if self.layout not in ("nchw", "nchwc"):
            raise ModelsError(f"unknown layout {self.layout!r}; use nchw or nchwc")

    @property
    def key(self) -> str:
        """A stable string naming this configuration, e.g. for a database row."""
        parts = [
            self.op,
            f"{self.layout}{self.block if self.block > 1 else ''}",
            f"{self.in_channels}>{self.out_channels}",
            f"{self.height}x{self.width}",
            "k{}x{}".format(*self.kernel),
            "s{}x{}".format(*self.stride),
            "p{},{},{},{}".format(*self.padding),
            "d{}x{}".format(*self.dilation),
            f"g{self.groups}",
            self.function or "-",
            "sum" if self.residual else "-",
        ]
        return "|".join(parts)

    @property
    def depthwise(self) -> bool:
        """True for a convolution with one filter per channel."""
        return self.op == "conv" and self.groups > 1 and self.groups == self.in_channels

    def output_hw(self) -> tuple[int, int]:
        """Return the output (height, width)."""
        if self.op == "pool" and self.function.startswith("Global"):
            return 1, 1
        if self.op not in ("conv", "pool"):
            return self.height, self.width
        out = []
        for i, size in enumerate((self.height, self.width)):
            span = self.dilation[i] * (self.kernel[i] - 1) + 1
            pad = self.padding[i] + self.padding[i + 2]
            out.append((size + pad - span) // self.stride[i] + 1)
        return out[0], out[1]

    def output_shape(self, batch_size: int) -> tuple[int, ...]:
        """Return the shape of the one-layer model's output for ``batch_size`` inputs."""
        if self.op == "linear":
            return batch_size, self.out_channels
        channels = self.out_channels
        if self.op == "reorder_in":
            channels = _padded(channels, self.block)
        return (batch_size, channels, *self.output_hw())

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        """Return the shape of the one-layer model's single input."""
        if self.op == "linear":
            return batch_size, self.in_channels
        channels = self.in_channels
        if self.op == "reorder_out":
            channels = _padded(channels, self.block)
        return batch_size, channels, self.height, self.width

    def to_onnx(self, batch_size: int = 1) -> bytes:
        """Return a serialized one-layer ONNX model of this configuration.

        Built with ``onnx.helper`` in a millisecond: weights and other constant operands
        are ``ConstantOfShape`` nodes, which onnxruntime folds into initializers when the
        session is created, so the bytes stay small however big the layer. ``nchwc``
        configurations use onnxruntime's own blocked operators (domain
        :data:`NCHWC_DOMAIN`) on already-blocked tensors, so the model times the kernel
        as it runs inside a network, without the reorders an isolated plain
        convolution would get; they load only in onnxruntime on a CPU with NCHWc
        kernels.

        Args:
            batch_size: the (fixed) batch of the model's single input.

        Returns:
            The model: one float32 input ``x`` of :meth:`input_shape`, one output ``y``
            of :meth:`output_shape`.
        """
        builder = _Builder(self, batch_size)
        return builder.model()

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-able values."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerShape:
        """Rebuild a shape written by :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names
        }
        return cls(**values)


def _padded(channels: int, block: int) -> int:
    return -(-channels // block) * block


class _Builder:
    """Assembles the one-layer graph of a :class:`LayerShape`."""

    def __init__(self, shape: LayerShape, batch_size: int) -> None:
        self.shape = shape
        self.batch = batch_size
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.domains = {"": _ONNX_OPSET}

    def constant(self, name: str, dims: tuple[int, ...]) -> str:
        dims_name = f"{name}_shape"
        self.initializers.append(
            helper.make_tensor(dims_name, TensorProto.INT64, [len(dims)], list(dims))
        )
        value = helper.make_tensor("value", TensorProto.FLOAT, [1], [_FILL])
        self.nodes.append(helper.make_node("ConstantOfShape", [dims_name], [name], value=value))
        return name

    def scalar(self, name: str, value: float) -> str:
        self.initializers.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain or None, **attrs))
        if domain:
            self.domains[domain] = 1
        return out

    def unary(self, function: str, x: str) -> str:
        if function == "SiLU":  # onnxruntime fuses x * sigmoid(x) into one QuickGelu kernel
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        if function == "Clip":
            return self.node("Clip", [x, self.scalar("lo", 0.0), self.scalar("hi", 6.0)])
        if function == "LeakyRelu":
            return self.node(function, [x], alpha=0.01)
        if function not in _UNARY:
            raise ModelsError(f"no one-layer model for the function {function!r}")
        return self.node(function, [x])

    def model(self) -> bytes:
        s = self.shape
        getattr(self, f"_{s.op}")("x")
        self.nodes[-1].output[0] = "y"  # the op's own node comes last
        graph = helper.make_graph(
            self.nodes,
            s.key,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, s.input_shape(self.batch))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, s.output_shape(self.batch))],
            self.initializers,
        )
        opsets = [helper.make_opsetid(domain, v) for domain, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="inferprune")
        model.ir_version = 8
        return model.SerializeToString()

    def _conv_attrs(self) -> dict[str, Any]:
        s = self.shape
        return {
            "kernel_shape": list(s.kernel),
            "strides": list(s.stride),
            "pads": list(s.padding),
            "dilations": list(s.dilation),
            "group": s.groups,
        }

    def _conv(self, x: str) -> str:
        s = self.shape
        per_group = 1 if s.depthwise else s.in_channels // s.groups
        w = self.constant("w", (s.out_channels, per_group, *s.kernel))
        b = self.constant("b", (s.out_channels,))
        summand = self.constant("z", self.shape.output_shape(self.batch)) if s.residual else None
        if s.layout == "nchwc":
            attrs = self._conv_attrs()
            if s.function:
                attrs["activation"] = s.function
                if s.function in _ACTIVATION_PARAMS:
                    attrs["activation_params"] = _ACTIVATION_PARAMS[s.function]
            inputs = [x, w, b] + ([summand] if summand else [])
            return self.node("Conv", inputs, NCHWC_DOMAIN, **attrs)
        out = self.node("Conv", [x, w, b], **self._conv_attrs())
        if summand:
            out = self.node("Add", [out, summand])
        return self.unary(s.function, out) if s.function else out

    def _linear(self, x: str) -> str:
        s = self.shape
        w = self.constant("w", (s.out_channels, s.in_channels))
        return self.node("Gemm", [x, w, self.constant("b", (s.out_channels,))], transB=1)

    def _unary(self, x: str) -> str:
        return self.unary(self.shape.function, x)

    def _add(self, x: str) -> str:
        op = "Mul" if self.shape.function == "Mul" else "Add"
        return self.node(op, [x, self.constant("z", self.shape.input_shape(self.batch))])

    def _scale(self, x: str) -> str:
        return self.node("Mul", [x, self.constant("z", (self.batch, self.shape.in_channels, 1, 1))])

    def _pool(self, x: str) -> str:
        s = self.shape
        if s.function not in _POOLS:
            raise ModelsError(f"no one-layer model for the pooling {s.function!r}")
        attrs: dict[str, Any] = {}
        if not s.function.startswith("Global"):
            attrs = {"kernel_shape": list(s.kernel), "strides": list(s.stride)}
            attrs["pads"] = list(s.padding)
            if s.function == "MaxPool":
                attrs["dilations"] = list(s.dilation)
        return self.node(s.function, [x], NCHWC_DOMAIN if s.layout == "nchwc" else "", **attrs)

    def _reorder_in(self, x: str) -> str:
        return self.node("ReorderInput", [x], NCHWC_DOMAIN, channels_last=0)

    def _reorder_out(self, x: str) -> str:
        channels = self.shape.in_channels
        return self.node("ReorderOutput", [x], NCHWC_DOMAIN, channels=channels, channels_last=0)


@functools.cache
def onnxruntime_channel_block() -> int:
    """Return the channel block of this onnxruntime's NCHWc CPU kernels (1: none).

    Read from the graph onnxruntime optimizes for a one-channel convolution: its
    blocked version pads the filters to the block (16 with AVX-512, 8 with AVX2).
    """
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _ONNX_OPSET)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    dims = {t.name: list(t.dims) for t in optimized.graph.initializer}
    for node in optimized.graph.node:
        if node.domain == NCHWC_DOMAIN and node.op_type == "Conv" and node.input[1] in dims:
            return int(dims[node.input[1]][0])
    return 1
