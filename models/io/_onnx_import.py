"""ONNX in: a CNN's graph turned into a torch module that can be pruned and trained.

An uploaded graph is data. It is parsed (protobuf, no code), checked against limits,
and rebuilt from a fixed table of the operators CNNs use: parametric nodes become
``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` holding the graph's initializers, and
the rest run as the torch functions this module names. Nothing from the file is ever
executed or looked up by name. An operator outside the table is refused, by name,
before anything is built. :func:`check_against_onnxruntime` then compares the module's
outputs with onnxruntime's on random inputs.

Torch-Pruning traces the rebuilt module like any other: additions and concatenations
couple the channels they join, and a flattening reshape is rebuilt as
``flatten(x, 1)`` so that it still fits after pruning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from models.errors import WeightsError
from models.io._onnx_layers import parametric_layer, symmetric_pads

__all__ = [
    "MAX_ONNX_NODES",
    "MAX_ONNX_PARAMETERS",
    "SUPPORTED_OPS",
    "OnnxImport",
    "OnnxNet",
    "check_against_onnxruntime",
    "import_onnx",
]

MAX_ONNX_NODES = 5_000
"""Most nodes an uploaded graph may have."""

MAX_ONNX_PARAMETERS = 200_000_000
"""Most values all initializers together may hold (800 MB of float32)."""

MAX_INITIALIZER_VALUES = 50_000_000
"""Most values one initializer may hold."""

_ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": torch.div,
}
_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "HardSwish": F.hardswish,
    "Identity": lambda x: x,
    "Dropout": lambda x: x,  # inference graphs: identity
}
_PARAMETRIC = ("Conv", "BatchNormalization", "Gemm", "MatMul")
_OTHER = (
    "Clip",
    "HardSigmoid",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Constant",
)
RECURRENT_OPS = ("GRU", "LSTM", "RNN")
"""ONNX's recurrent operators: refused with their own message (see :func:`import_onnx`)."""
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted({*_ELEMENTWISE, *_UNARY, *_PARAMETRIC, *_OTHER}))
"""The ONNX operators an uploaded model may use (the default domain only)."""


@dataclass(frozen=True)
class _Node:
    """One node as the rebuilt module runs it: its operator, the names of its inputs
    and outputs, its attributes, and the module holding its weights (if any)."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    module: str | None = None


class OnnxNet(nn.Module):
    """A CNN rebuilt from an ONNX graph: its layers are ordinary torch modules (under
    ``layers``), its constants buffers, and ``forward`` runs the graph's nodes in order."""

    def __init__(
        self,
        nodes: Sequence[_Node],
        layers: dict[str, nn.Module],
        constants: dict[str, torch.Tensor],
        input_name: str,
        output_name: str,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self._constant_names: dict[str, str] = {}
        for index, (name, value) in enumerate(constants.items()):
            buffer = f"constant_{index}"
            self.register_buffer(buffer, value)
            self._constant_names[name] = buffer
        self._nodes = tuple(nodes)
        self._input = input_name
        self._output = output_name

    @property
    def nodes(self) -> tuple[_Node, ...]:
        """The graph's nodes, in the order ``forward`` runs them."""
        return self._nodes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self._input: x}
        for name, buffer in self._constant_names.items():
            values[name] = getattr(self, buffer)
        for node in self._nodes:
            args = [values[name] if name else None for name in node.inputs]
            result = self._run(node, args)
            values[node.outputs[0]] = result
        return values[self._output]

    def _run(self, node: _Node, args: list[torch.Tensor | None]) -> torch.Tensor:
        op, attrs = node.op, node.attrs
        if node.module is not None:
            return self.layers[node.module](args[0])
        if op in _UNARY:
            return _UNARY[op](_first(args))
        if op in _ELEMENTWISE:
            return _ELEMENTWISE[op](_first(args), _second(args))
        if op == "Clip":
            low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
            high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
            return torch.clamp(_first(args), min=_scalar(low), max=_scalar(high))
        if op == "HardSigmoid":
            alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
            return torch.clamp(alpha * _first(args) + beta, 0.0, 1.0)
        if op == "Concat":
            return torch.cat([a for a in args if a is not None], dim=int(attrs["axis"]))
        if op == "MaxPool":
            return F.max_pool2d(_first(args), **_pool_args(attrs))
        if op == "AveragePool":
            pool = _pool_args(attrs)
            pool.pop("dilation")
            include = bool(attrs.get("count_include_pad", 0))
            return F.avg_pool2d(_first(args), count_include_pad=include, **pool)
        if op == "GlobalAveragePool":
            return F.adaptive_avg_pool2d(_first(args), 1)
        if op == "ReduceMean":
            axes = tuple(int(a) for a in attrs["axes"])
            return _first(args).mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))
        if op in ("Flatten", "Reshape"):
            return torch.flatten(_first(args), 1)
        raise AssertionError(f"unreachable: {op} was checked at import")


def _first(args: list[torch.Tensor | None]) -> torch.Tensor:
    value = args[0]
    assert value is not None
    return value


def _second(args: list[torch.Tensor | None]) -> torch.Tensor:
    value = args[1]
    assert value is not None
    return value


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0])
    return float(value)


def _pool_args(attrs: dict[str, Any]) -> dict[str, Any]:
    kernel = tuple(attrs["kernel_shape"])
    pads = tuple(attrs.get("pads", (0,) * 2 * len(kernel)))
    return {
        "kernel_size": kernel,
        "stride": tuple(attrs.get("strides", (1,) * len(kernel))),
        "padding": symmetric_pads(pads, "pool"),
        "dilation": tuple(attrs.get("dilations", (1,) * len(kernel))),
        "ceil_mode": bool(attrs.get("ceil_mode", 0)),
    }


@dataclass(frozen=True)
class OnnxImport:
    """An imported model: the module, one input's (C, H, W), its classes, its ops."""

    model: OnnxNet
    input_shape: tuple[int, int, int]
    num_classes: int
    ops: tuple[str, ...]
    graph_name: str


def import_onnx(data: bytes, *, max_nodes: int = MAX_ONNX_NODES) -> OnnxImport:
    """Rebuild the CNN in the ONNX file ``data`` as a torch module (in eval mode).

    Raises:
        WeightsError: a malformed file or graph, weights stored outside the file, more
            than one input or output, an input that is not one (N, C, H, W) image, an
            operator outside :data:`SUPPORTED_OPS` (all such named at once; a recurrent
            network's LSTM/GRU/RNN with a message of its own), or limits broken (nodes,
            initializer sizes).
    """
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and others
        raise WeightsError(f"not a valid ONNX model: {_first_line(exc)}") from None
    graph = proto.graph
    # the limits first: the checker walks every node and initializer
    if len(graph.node) > max_nodes:
        raise WeightsError(f"the graph has {len(graph.node):,} nodes; at most {max_nodes:,}")
    _check_sizes(graph)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx's ValidationError and others
        raise WeightsError(f"not a valid ONNX model: {_first_line(exc)}") from None
    unknown = sorted(
        {
            n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            for n in graph.node
            if n.op_type not in SUPPORTED_OPS or n.domain not in ("", "ai.onnx")
        }
    )
    recurrent = sorted(set(unknown) & set(RECURRENT_OPS))
    if recurrent:
        # refused whole rather than half-rebuilt: the table has no recurrent layers, and
        # the hidden-unit groups need the zoo's stack of single-layer nn.LSTM/nn.GRU
        raise WeightsError(
            f"the graph is a recurrent network ({', '.join(recurrent)} operators): ONNX "
            "sequence models cannot be converted yet; prune it from the zoo (arch "
            "lstm_classifier or gru_classifier with its weights, input_shape [T, F]) or "
            "your torch module with search.prune_module"
        )
    if unknown:
        raise WeightsError(
            f"unsupported ONNX operators: {', '.join(unknown)}; a model may use "
            f"{', '.join(SUPPORTED_OPS)}"
        )
    initializers = _initializers(graph)
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise WeightsError(
            f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs; a "
            "classifier with one image input and one logits output is needed"
        )
    shape = _input_shape(inputs[0])
    try:
        nodes, layers, constants = _rebuild(graph, initializers)
    except WeightsError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        # an attribute or input a well-formed node of that operator would have
        reason = _first_line(exc)
        raise WeightsError(f"the ONNX graph cannot be rebuilt: {reason}") from None
    model = OnnxNet(nodes, layers, constants, inputs[0].name, graph.output[0].name).eval()
    with torch.no_grad():
        try:
            logits = model(torch.zeros(1, *shape))
        except Exception as exc:  # shapes the table's functions refuse
            reason = _first_line(exc)
            raise WeightsError(f"the ONNX graph cannot run as rebuilt: {reason}") from None
    if logits.dim() != 2:
        raise WeightsError(
            f"the graph outputs shape {tuple(logits.shape)} for one image; a classifier "
            "giving (batch, classes) logits is needed"
        )
    ops = tuple(sorted({n.op_type for n in graph.node}))
    return OnnxImport(model, shape, int(logits.shape[1]), ops, graph.name or "onnx")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _check_sizes(graph: onnx.GraphProto) -> None:
    """Refuse weights stored outside the file, and initializers over the limits (read
    from their dims, before any data is)."""
    total = 0
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise WeightsError(
                f"initializer {tensor.name!r} is stored outside the file; save the model "
                "with its weights inside (onnx.save(model, path, save_as_external_data=False))"
            )
        values = math.prod(tensor.dims)
        if values > MAX_INITIALIZER_VALUES:
            raise WeightsError(
                f"initializer {tensor.name!r} holds {values:,} values; at most "
                f"{MAX_INITIALIZER_VALUES:,}"
            )
        total += values
        if total > MAX_ONNX_PARAMETERS:
            raise WeightsError(f"the initializers hold more than {MAX_ONNX_PARAMETERS:,} values")


def _initializers(graph: onnx.GraphProto) -> dict[str, torch.Tensor]:
    _check_sizes(graph)
    out: dict[str, torch.Tensor] = {}
    for tensor in graph.initializer:
        try:
            array = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:  # data that does not match its dims or type
            reason = _first_line(exc)
            raise WeightsError(f"initializer {tensor.name!r} is damaged: {reason}") from None
        out[tensor.name] = torch.from_numpy(np.array(array, copy=True))
    return out


def _input_shape(value: onnx.ValueInfoProto) -> tuple[int, int, int]:
    dims = value.type.tensor_type.shape.dim
    known = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(known) != 4 or any(v is None or v < 1 for v in known[1:]):
        raise WeightsError(
            f"the input {value.name!r} has shape {known}; an image batch (N, C, H, W) with "
            "fixed C, H and W is needed"
        )
    return (int(known[1] or 0), int(known[2] or 0), int(known[3] or 0))


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _rebuild(
    graph: onnx.GraphProto, initializers: dict[str, torch.Tensor]
) -> tuple[list[_Node], dict[str, nn.Module], dict[str, torch.Tensor]]:
    """Return the nodes to run, the parametric layers, and the constants they read."""
    nodes: list[_Node] = []
    layers: dict[str, nn.Module] = {}
    constants = dict(initializers)
    for index, node in enumerate(graph.node):
        attrs = _attributes(node)
        op = node.op_type
        if op == "Constant":
            value = attrs.get("value")
            if not isinstance(value, onnx.TensorProto):
                raise WeightsError(f"Constant node {node.name!r} holds no tensor")
            constants[node.output[0]] = torch.from_numpy(
                np.array(numpy_helper.to_array(value), copy=True)
            )
            continue
        if op == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]  # an alias of a weight
            continue
        if op == "ReduceMean" and "axes" not in attrs and len(node.input) > 1:
            attrs["axes"] = constants[node.input[1]].tolist()  # opset 18: axes as an input
        if op == "ReduceMean" and sorted(int(a) % 4 for a in attrs.get("axes", ())) != [2, 3]:
            raise WeightsError("ReduceMean over axes other than height and width is not supported")
        if op == "Reshape" and not _is_flatten(node, constants):
            raise WeightsError(f"Reshape node {node.name!r} is not a flattening (N, -1)")
        if op == "Flatten" and int(attrs.get("axis", 1)) != 1:
            raise WeightsError(f"Flatten node {node.name!r} does not flatten from axis 1")
        module = None
        if op in _PARAMETRIC:
            module = f"{op.lower()}_{index}"
            layers[module] = parametric_layer(op, node, attrs, constants)
        inputs = tuple(node.input[:1]) if module is not None else tuple(node.input)
        nodes.append(_Node(op, inputs, tuple(node.output), attrs, module))
    used = {name for n in nodes for name in n.inputs}
    return nodes, layers, {k: v.float() for k, v in constants.items() if k in used}


def _is_flatten(node: onnx.NodeProto, constants: dict[str, torch.Tensor]) -> bool:
    shape = constants.get(node.input[1]) if len(node.input) > 1 else None
    if shape is None:
        return False
    target = [int(v) for v in shape.reshape(-1).tolist()]
    return len(target) == 2 and target[1] == -1 or (len(target) == 2 and target[0] in (-1, 0, 1))


def check_against_onnxruntime(
    data: bytes, imported: OnnxImport, *, samples: int = 2, tolerance: float = 1e-3
) -> float:
    """Return the largest difference between the rebuilt module's and onnxruntime's
    outputs on ``samples`` seeded random images; raise when over ``tolerance`` (relative
    to the outputs' scale).

    Raises:
        WeightsError: onnxruntime cannot run the graph, or the outputs differ.
    """
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(0)
    x = torch.randn((samples, *imported.input_shape), generator=generator)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        expected = [
            session.run(None, {session.get_inputs()[0].name: x[i : i + 1].numpy()})[0]
            for i in range(samples)
        ]
    except Exception as exc:  # onnxruntime's own exception types
        raise WeightsError(f"onnxruntime cannot run the model: {_first_line(exc)}") from None
    with torch.no_grad():
        got = imported.model(x).numpy()
    reference = np.concatenate(expected)
    difference = float(np.abs(got - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    if not difference <= tolerance * scale:
        raise WeightsError(
            f"the rebuilt model's outputs differ from onnxruntime's by {difference:.3g}; "
            "this graph uses an operator in a way the importer does not reproduce"
        )
    return difference
