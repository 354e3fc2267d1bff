"""Static cost of a model: MACs (fvcore), parameters and size in bytes."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore scripts a helper at import: torch warns about jit
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from models.cost._recurrent_macs import recurrent_op_handles
from models.errors import ModelsError

__all__ = ["Cost", "count_macs", "count_params", "macs_by_layer", "measure_cost", "size_bytes"]


@dataclass(frozen=True)
class Cost:
    """What a model costs to store and to run once on one input.

    Attributes:
        macs: multiply-accumulates of one forward pass at batch size 1, as fvcore counts
            them (one per multiply-add of conv/linear, plus BN, pooling, upsampling).
            Many papers call this number "FLOPs"; it is MACs.
        params: number of trainable parameters.
        size_bytes: bytes of all tensors of the state dict (what a checkpoint holds).
    """

    macs: int
    params: int
    size_bytes: int


def _analysis(model: nn.Module, input_shape: Sequence[int]) -> FlopCountAnalysis:
    was_training = model.training
    model.eval()
    example = torch.zeros((1, *input_shape))
    analysis = FlopCountAnalysis(model, example).set_op_handle(**recurrent_op_handles())
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    fvcore_logger = logging.getLogger("fvcore")
    previous = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis.total()  # runs the trace once; later queries reuse it
    except Exception as exc:
        raise ModelsError(f"fvcore could not count this model: {exc}") from exc
    finally:
        fvcore_logger.setLevel(previous)
        model.train(was_training)
    return analysis


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Return the MACs of one forward pass on one input (C, H, W) or (T, F), via fvcore."""
    return int(_analysis(model, input_shape).total())


def macs_by_layer(
    model: nn.Module, input_shape: Sequence[int], also: Sequence[str] = ()
) -> tuple[int, dict[str, int]]:
    """Return fvcore's total MACs and the MACs of each leaf module (by module path),
    and of the modules ``also`` names (parents: everything run inside them).

    The total may exceed the sum of the leaves: functional ops called directly in a
    parent's ``forward`` are counted but belong to no leaf.
    """
    analysis = _analysis(model, input_shape)
    by_module = analysis.by_module()
    leaves = {
        name: int(by_module.get(name, 0))
        for name, module in model.named_modules()
        if name and not list(module.children())
    }
    leaves.update({name: int(by_module.get(name, 0)) for name in also})
    return int(analysis.total()), {k: v for k, v in leaves.items() if v}


def count_params(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def size_bytes(model: nn.Module) -> int:
    """Return the bytes of every tensor in the state dict (parameters and buffers)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def measure_cost(model: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Return the measured :class:`Cost` of ``model`` on one input (C, H, W) or (T, F)."""
    return Cost(
        macs=count_macs(model, input_shape),
        params=count_params(model),
        size_bytes=size_bytes(model),
    )
