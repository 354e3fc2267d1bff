"""One parametric ONNX node (Conv, BatchNormalization, Gemm, MatMul) rebuilt as the torch
layer that holds its initializers; see :mod:`models.io._onnx_import`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
import torch
from torch import nn

from models.errors import WeightsError

__all__ = ["parametric_layer", "symmetric_pads"]


def symmetric_pads(pads: Sequence[int], what: str) -> tuple[int, ...]:
    """Return the leading half of ONNX ``pads`` (begins, then ends), refusing asymmetric
    padding, which torch's layers cannot express."""
    half = len(pads) // 2
    begin, end = tuple(pads[:half]), tuple(pads[half:])
    if begin != end:
        raise WeightsError(f"ONNX {what} with asymmetric padding {list(pads)} is not supported")
    return begin


def _weight(constants: dict[str, torch.Tensor], name: str, node: onnx.NodeProto) -> torch.Tensor:
    if name not in constants:
        raise WeightsError(f"{node.op_type} node {node.name!r} takes weights computed at run time")
    return constants[name].float()


def parametric_layer(
    op: str, node: onnx.NodeProto, attrs: dict[str, Any], constants: dict[str, torch.Tensor]
) -> nn.Module:
    """Return the torch layer of a parametric node, holding the node's initializers."""
    if op == "Conv":
        weight = _weight(constants, node.input[1], node)
        if weight.dim() != 4:
            raise WeightsError(f"Conv node {node.name!r} is not 2-D")
        groups = int(attrs.get("group", 1))
        out_channels, per_group, kh, kw = weight.shape
        top, left = symmetric_pads(attrs.get("pads", (0, 0, 0, 0)), "convolution")
        conv = nn.Conv2d(
            per_group * groups,
            out_channels,
            (kh, kw),
            stride=tuple(attrs.get("strides", (1, 1))),
            padding=(top, left),
            dilation=tuple(attrs.get("dilations", (1, 1))),
            groups=groups,
            bias=len(node.input) > 2 and bool(node.input[2]),
        )
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise WeightsError(f"Conv node {node.name!r} uses auto_pad; export with explicit pads")
        with torch.no_grad():
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(_weight(constants, node.input[2], node))
        return conv
    if op == "BatchNormalization":
        scale, shift, mean, var = (_weight(constants, n, node) for n in node.input[1:5])
        norm = nn.BatchNorm2d(len(scale), eps=float(attrs.get("epsilon", 1e-5)))
        with torch.no_grad():
            norm.weight.copy_(scale)
            norm.bias.copy_(shift)
            assert norm.running_mean is not None and norm.running_var is not None
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        return norm
    # Gemm / MatMul with a constant weight: a linear layer
    weight = _weight(constants, node.input[1], node)
    if op == "Gemm":
        if int(attrs.get("transA", 0)):
            raise WeightsError(f"Gemm node {node.name!r} transposes its input")
        if not int(attrs.get("transB", 0)):
            weight = weight.t()
        weight = weight * float(attrs.get("alpha", 1.0))
    else:
        weight = weight.t()
    if weight.dim() != 2:
        raise WeightsError(f"{op} node {node.name!r} has a weight of shape {list(weight.shape)}")
    bias: torch.Tensor | None = None
    if op == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = _weight(constants, node.input[2], node) * float(attrs.get("beta", 1.0))
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            assert linear.bias is not None
            linear.bias.copy_(bias.reshape(-1))
    return linear
