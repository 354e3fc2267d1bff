"""What a structured-sparse model costs: non-zero parameters and effective MACs.

Kernel pruning zeroes single k×k kernels and leaves the layers dense; magnitude pruning
of recurrent layers (:class:`models.prune.AgpRecurrentMasking`) zeroes single weights of
their ``weight_ih``/``weight_hh`` matrices. Dense runtimes (onnxruntime, torch) multiply
those zeros all the same, so the measured latency and the dense MACs are what the model
really costs there; the *effective* MACs say what a runtime that skipped the zeros would
do, and are reported beside, never instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.cost._counting import Cost, count_params, macs_by_layer, size_bytes
from models.prune import recurrent_weights

__all__ = ["SparseCost", "kept_kernel_shares", "measure_sparse_cost"]


@dataclass(frozen=True)
class SparseCost(Cost):
    """A :class:`Cost` with what zeroed kernels would save on a sparse-aware runtime.

    Attributes:
        nonzero_params: parameters less the weights of all-zero kernels of convolutions
            and the zero weights of recurrent layers' input and hidden matrices.
        effective_macs: dense MACs less each convolution's MACs times its share of
            all-zero kernels, and one MAC per zero recurrent weight per time step.
    """

    nonzero_params: int = 0
    effective_macs: int = 0


def _kernels(module: nn.Module) -> torch.Tensor | None:
    if not isinstance(module, nn.modules.conv._ConvNd) or module.transposed:
        return None
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # a prune re-parametrization leaves a tensor
    return weight.detach().flatten(2)


def kept_kernel_shares(model: nn.Module) -> dict[str, float]:
    """Return, per convolution with an all-zero kernel, the share of its kernels kept.

    A kernel counts as removed when every weight in it is exactly zero, which is what
    kernel pruning leaves (trained weights are never all exactly zero by chance).
    """
    shares = {}
    for name, module in model.named_modules():
        kernels = _kernels(module)
        if kernels is None:
            continue
        kept = kernels.ne(0).any(2)
        if not bool(kept.all()):
            shares[name] = float(kept.float().mean())
    return shares


def _recurrent_zeros(model: nn.Module) -> int:
    """Return how many weights of LSTM/GRU input and hidden matrices are exactly zero
    (each is used once per time step and direction)."""
    return sum(int((w.detach() == 0).sum()) for w in recurrent_weights(model).values())


def measure_sparse_cost(model: nn.Module, input_shape: Sequence[int]) -> SparseCost:
    """Return the dense cost of ``model`` and, beside it, what its zeros save: all-zero
    convolution kernels, and zero weights of recurrent layers.

    Args:
        model: the network (removed kernels are zeros of its weights, or a
            ``torch.nn.utils.prune`` mask is attached).
        input_shape: (C, H, W) of one image, or (T, F) of one sequence.

    Returns:
        The :class:`SparseCost`; for a dense model ``nonzero_params == params`` and
        ``effective_macs == macs``.

    Raises:
        ModelsError: fvcore cannot count the model.
    """
    total, by_layer = macs_by_layer(model, input_shape)
    params = count_params(model)
    modules = dict(model.named_modules())
    zero_weights = 0
    saved_macs = 0.0
    for name, share in kept_kernel_shares(model).items():
        kernels = _kernels(modules[name])
        assert kernels is not None
        zero_weights += int(kernels.ne(0).any(2).logical_not().sum()) * kernels.shape[2]
        saved_macs += by_layer.get(name, 0) * (1.0 - share)
    recurrent_zeros = _recurrent_zeros(model)
    if recurrent_zeros:
        zero_weights += recurrent_zeros
        saved_macs += recurrent_zeros * int(input_shape[0])  # once per time step
    return SparseCost(
        macs=total,
        params=params,
        size_bytes=size_bytes(model),
        nonzero_params=params - zero_weights,
        effective_macs=total - round(saved_macs),
    )
