"""Reading a model's ONNX export into the :class:`Network` the latency table models."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from models.cost._network import Network, OpNode, TensorInfo
from models.errors import ModelsError
from models.prune import DimCoverage, PruningGraph

__all__ = ["CONV_ACTIVATIONS", "read_network"]

CONV_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"})
"""Activations onnxruntime fuses into the convolution before them (its only reader)."""

_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "LeakyRelu"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
_RESHAPES = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze"})
_ALIASES = frozenset({"Identity", "Dropout"})


def _weighted_calls(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """Return the (name, module) of every Conv2d and Linear call of one forward pass, in order."""
    calls: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: calls.append((name, m)))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls


class _Reader:
    """Walks an exported ONNX graph once and builds the :class:`Network`."""

    def __init__(self, onnx_bytes: bytes, graph: PruningGraph) -> None:
        model = onnx.load_from_string(onnx_bytes)
        if len(model.graph.input) != 1:
            raise ModelsError("the latency table needs a network with exactly one input")
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        model = onnx.shape_inference.infer_shapes(model)
        self.graph = graph
        self.shapes: dict[str, list[int]] = {}
        self.integers: set[str] = set()  # shape arithmetic, not activations
        for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = [d.dim_value for d in dims]
            if info.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                self.integers.add(info.name)
        self.constants: dict[str, list[int]] = {
            t.name: list(t.dims) for t in model.graph.initializer
        }
        self.onnx = model
        self.index: dict[str, int] = {}
        self.tensors: list[TensorInfo] = []
        self.ops: list[OpNode] = []
        self.scoped = True  # every op's module was read, and the convolutions' agree

    def tensor(self, name: str, channels: DimCoverage | None = None) -> int:
        shape = self.shapes.get(name, [])
        if len(shape) < 2:
            raise ModelsError(f"ONNX tensor {name!r} has no inferred shape (N, C, ...)")
        coverage = channels or DimCoverage(shape[1])
        spatial = len(shape) == 4
        self.tensors.append(
            TensorInfo(
                channels=coverage.size,
                by_group=coverage.by_group,
                height=shape[2] if spatial else 1,
                width=shape[3] if spatial else 1,
                spatial=spatial,
            )
        )
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def coverage(self, index: int) -> DimCoverage:
        t = self.tensors[index]
        return DimCoverage(t.channels, t.by_group)

    def nodes(self) -> Iterator[onnx.NodeProto]:
        for node in self.onnx.graph.node:
            if node.op_type == "Constant":
                value = helper.get_attribute_value(node.attribute[0])
                self.constants[node.output[0]] = list(numpy_helper.to_array(value).shape)
            elif node.op_type in _ALIASES and node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]
            else:
                yield node


def read_network(model: nn.Module, graph: PruningGraph, onnx_bytes: bytes) -> Network:
    """Return the :class:`Network` of ``model`` from its ONNX export.

    Convolutions and linear layers are matched to ``model``'s modules by call order
    (checked against their weight shapes), which gives their output channels' groups;
    every other op's channels follow its input. Fusions onnxruntime always makes are
    applied here: an activation into the convolution it alone reads, ``x *
    sigmoid(x)`` into one SiLU op; identities and dropouts vanish.

    Args:
        model: the unpruned network (run once, not modified).
        graph: its :class:`PruningGraph`.
        onnx_bytes: ``model`` exported with :func:`models.io.onnx_model_bytes`.

    Returns:
        The network.

    Raises:
        ModelsError: the export has several inputs, a tensor without an inferred shape,
            or weighted ops that do not match the model's convolutions and linear layers.
    """
    reader = _Reader(onnx_bytes, graph)
    calls = iter(_weighted_calls(model, graph.input_shape))
    alias: dict[str, str] = {}
    reader.tensor(reader.onnx.graph.input[0].name)
    for node in reader.nodes():
        inputs = [alias.get(n, n) for n in node.input if n]
        activations = [n for n in inputs if n in reader.index]
        if (
            not activations
            or node.output[0] in reader.constants
            or node.output[0] in reader.integers
        ):
            continue  # constants and shape arithmetic: no kernel on activations
        if node.op_type in _ALIASES:
            alias[node.output[0]] = activations[0]
            continue
        _add_op(reader, node, inputs, activations, calls)
    leftover = next(calls, None)
    if leftover is not None:
        raise ModelsError(f"layer {leftover[0]!r} has no convolution or Gemm in the ONNX export")
    outputs = tuple(reader.index[alias.get(o.name, o.name)] for o in reader.onnx.graph.output)
    ops, outputs = _fuse(reader.ops, outputs, len(reader.tensors))
    uses = _uses(ops, outputs, len(reader.tensors))
    return Network(tuple(reader.tensors), tuple(ops), outputs, uses, scoped=reader.scoped)


def node_scope(node: onnx.NodeProto) -> str | None:
    """Return the module path an exported node ran in ("" at the top level), or None if
    the export does not say.

    The torch.export-based exporter lists the fully qualified modules in the node's
    ``pkg.torch.onnx.name_scopes`` metadata; the TorchScript-based one names the node
    ``/layer1/layer1.0/conv1/Conv``, each part a module's name in its parent, where a
    child of a ``Sequential`` is named with the parent's (``layer1.0``, ``conv.0.0``).
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
                return None
            modules = [x for x in scopes[:-1] if x]  # the last one names the op itself
            return modules[-1] if modules else ""
    if not node.name.startswith("/"):
        return None
    path: list[str] = []
    for part in node.name.split("/")[1:-1]:
        path = _joined(path, part.split("."))
    return ".".join(path)


def _joined(path: Sequence[str], part: Sequence[str]) -> list[str]:
    """Return ``path`` extended by a scope name that may repeat its last components."""
    for k in range(min(len(path), len(part)), 0, -1):
        if list(path[-k:]) == list(part[:k]):
            return [*path, *part[k:]]
    return [*path, *part]


def _add_op(
    reader: _Reader,
    node: onnx.NodeProto,
    inputs: list[str],
    activations: list[str],
    calls: Iterator[tuple[str, nn.Module]],
) -> None:
    op_type = node.op_type
    first = reader.index[activations[0]]
    ins = tuple(reader.index[n] for n in activations)
    out_name = node.output[0]
    out_shape = reader.shapes.get(out_name, [])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = reader.constants.get(inputs[1]) if len(inputs) > 1 else None
    scope = node_scope(node)
    if op_type in ("Conv", "Gemm", "MatMul") and weight is not None and len(ins) == 1:
        name, module = _matching_call(calls, op_type, weight, attrs)
        # the export may name a convolution by the BatchNorm folded into it: its parent
        # module must be the matched layer's
        if scope is None or scope.rpartition(".")[0] != name.rpartition(".")[0]:
            reader.scoped = False
        layer = reader.graph.layers.get(name)
        coverage = layer.outputs if layer is not None else None
        out = reader.tensor(out_name, coverage)
        if op_type != "Conv" or len(weight) != 4:
            reader.ops.append(OpNode("linear", ins, out, scope=name))
            return
        groups = int(attrs.get("group", 1))
        kernel = (int(weight[2]), int(weight[3]))
        reader.ops.append(
            OpNode(
                "conv",
                ins,
                out,
                kernel=kernel,
                stride=_pair(attrs.get("strides")),
                padding=_quad(attrs.get("pads")),
                dilation=_pair(attrs.get("dilations")),
                groups=groups,
                depthwise=groups > 1 and groups == weight[0] and weight[1] == 1,
                scope=name,
            )
        )
        return
    if scope is None:
        reader.scoped = False
    follows = _follows_input(reader, ins, out_shape)
    out = reader.tensor(out_name, reader.coverage(follows) if follows is not None else None)
    op, function = _classify(op_type, ins, reader, out_shape, attrs)
    if op == "pool":
        reader.ops.append(
            OpNode(
                "pool",
                (first,),
                out,
                function=function,
                kernel=_pair(attrs.get("kernel_shape")),
                stride=_pair(attrs.get("strides")),
                padding=_quad(attrs.get("pads")),
                dilation=_pair(attrs.get("dilations")),
                scope=scope or "",
            )
        )
        return
    if op == "scale":  # the scaled tensor first, the per-channel vector second
        ins = tuple(sorted(ins, key=lambda i: -reader.tensors[i].height * reader.tensors[i].width))
    kept = ins if op in ("add", "mul", "scale") else (first,)
    reader.ops.append(OpNode(op, kept, out, function, scope=scope or ""))


def _matching_call(
    calls: Iterator[tuple[str, nn.Module]], op_type: str, weight: list[int], attrs: dict[str, Any]
) -> tuple[str, nn.Module]:
    call = next(calls, None)
    if call is None:
        raise ModelsError(f"the ONNX export has more weighted ops ({op_type}) than the model")
    name, module = call
    assert isinstance(module.weight, torch.Tensor)
    expected = list(module.weight.shape)
    got = weight
    if op_type == "MatMul" or (op_type == "Gemm" and not attrs.get("transB", 0)):
        got = weight[::-1]
    if expected != got:
        raise ModelsError(
            f"the ONNX {op_type} with weights {weight} does not match layer {name!r} "
            f"({expected}); the latency table needs the export's layers in call order"
        )
    return name, module


def _follows_input(reader: _Reader, ins: tuple[int, ...], out_shape: list[int]) -> int | None:
    """Return the input whose channels the output carries, if any."""
    for index in ins:
        t = reader.tensors[index]
        if len(out_shape) >= 2 and out_shape[1] == t.channels:
            if len(out_shape) == 4 or not t.spatial or t.height * t.width == 1:
                return index
    return None


def _classify(
    op_type: str, ins: tuple[int, ...], reader: _Reader, out_shape: list[int], attrs: dict[str, Any]
) -> tuple[str, str]:
    if op_type in _UNARY and len(ins) == 1:
        return "unary", op_type
    if op_type in _POOLS:
        return "pool", op_type
    if op_type in _RESHAPES:
        return "reshape", op_type
    if op_type in ("Add", "Sum", "Mul") and len(ins) == 2:
        a, b = (reader.tensors[i] for i in ins)
        same = (a.channels, a.height, a.width) == (b.channels, b.height, b.width)
        if same:
            return ("add" if op_type != "Mul" else "mul"), op_type
        if (
            op_type == "Mul"
            and a.channels == b.channels
            and min(a.height * a.width, b.height * b.width) == 1
        ):
            return "scale", op_type
    return "other", op_type


def _pair(values: Any) -> tuple[int, int]:
    return (int(values[0]), int(values[1])) if values else (1, 1)


def _quad(values: Any) -> tuple[int, int, int, int]:
    return (
        (int(values[0]), int(values[1]), int(values[2]), int(values[3])) if values else (0, 0, 0, 0)
    )


def _uses(ops: list[OpNode], outputs: tuple[int, ...], count: int) -> tuple[int, ...]:
    uses = [0] * count
    for op in ops:
        for index in op.inputs:
            uses[index] += 1
    for index in outputs:
        uses[index] += 1
    return tuple(uses)


def _fuse(
    ops: list[OpNode], outputs: tuple[int, ...], count: int
) -> tuple[list[OpNode], tuple[int, ...]]:
    """Apply the fusions onnxruntime makes whatever the channel counts: an activation into
    the convolution it alone reads, and ``x * sigmoid(x)`` into one SiLU op."""
    uses = _uses(ops, outputs, count)
    producer = {op.output: i for i, op in enumerate(ops)}
    replaced: dict[int, OpNode | None] = {}  # None: the op is gone
    renamed: dict[int, int] = {}  # a fused activation's output -> its convolution's
    for i, op in enumerate(ops):
        source = producer.get(op.inputs[0]) if op.inputs else None
        if (
            op.op == "unary"
            and op.function in CONV_ACTIVATIONS
            and source is not None
            and ops[source].op == "conv"
            and uses[op.inputs[0]] == 1
        ):
            replaced[source] = replace(ops[source], function=op.function)
            replaced[i] = None
            renamed[op.output] = op.inputs[0]
        elif op.op == "mul":
            for x, s in (op.inputs, op.inputs[::-1]):
                maker = producer.get(s)
                if maker is not None and uses[s] == 1 and ops[maker].inputs == (x,):
                    if ops[maker].op == "unary" and ops[maker].function == "Sigmoid":
                        replaced[maker] = None
                        replaced[i] = OpNode("unary", (x,), op.output, "SiLU", scope=op.scope)
                        break
    result = []
    for i, op in enumerate(ops):
        new = replaced.get(i, op)
        if new is not None:
            result.append(replace(new, inputs=tuple(renamed.get(x, x) for x in new.inputs)))
    return result, tuple(renamed.get(x, x) for x in outputs)
