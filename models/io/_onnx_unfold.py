"""BatchNorm given back to an imported model's convolutions, so that its pruned
candidates can be recalibrated."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from models.errors import WeightsError
from models.io._onnx_import import OnnxNet

__all__ = ["unfold_batchnorm"]


def unfold_batchnorm(
    net: OnnxNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, eps: float = 1e-5
) -> int:
    """Give every convolution of ``net`` that no BatchNormalization follows a BatchNorm
    that is the identity on ``batches``; return how many were added.

    Exports fold BatchNorm into the convolutions, so an imported model usually has none,
    and a pruned candidate's activations could not be re-normalized (adaptive BN) before
    fine-tuning. Each new BatchNorm holds its convolution's per-channel output mean and
    variance on ``batches`` as running statistics, and the same as its affine
    parameters (weight ``sqrt(var + eps)``, bias ``mean``), so the model's outputs do not
    change; after pruning, BN recalibration re-estimates the statistics and the affine
    part restores the channels' original scale. ONNX export folds them again.
    """
    consumed_by_norm = {
        name for node in net.nodes if node.op == "BatchNormalization" for name in node.inputs[:1]
    }
    bare = [
        node.module
        for node in net.nodes
        if node.op == "Conv"
        and node.module is not None
        and node.outputs[0] not in consumed_by_norm
        and isinstance(net.layers[node.module], nn.Conv2d)  # not unfolded already
    ]
    if not bare:
        return 0
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            values = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)
            sums[name] = sums.get(name, 0) + values.sum(1)
            squares[name] = squares.get(name, 0) + (values * values).sum(1)
            counts[name] = counts.get(name, 0) + values.shape[1]

        return record

    with contextlib.ExitStack() as hooks, torch.no_grad():  # handles remove themselves
        for name in bare:
            hooks.enter_context(net.layers[name].register_forward_hook(hook(name)))
        for inputs, _ in batches:
            net(inputs)
    for name in bare:
        if name not in counts:
            raise WeightsError("no calibration batch reached the model to unfold BatchNorm")
        mean = sums[name] / counts[name]
        var = (squares[name] / counts[name] - mean * mean).clamp_min(0.0)
        conv = net.layers[name]
        norm = nn.BatchNorm2d(len(mean), eps=eps)
        with torch.no_grad():
            assert norm.running_mean is not None and norm.running_var is not None
            norm.running_mean.copy_(mean.float())
            norm.running_var.copy_(var.float())
            norm.weight.copy_((var + eps).sqrt().float())
            norm.bias.copy_(mean.float())
        net.layers[name] = nn.Sequential(conv, norm).eval()
    return len(bare)
