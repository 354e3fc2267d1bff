"""Adaptive BatchNorm recalibration (Li et al., "EagleEye", ECCV 2020).

Pruning removes channels that BatchNorm statistics downstream were measured with, so a
pruned model's running means and variances no longer match what its layers see.
Re-estimating them from a few batches, without touching any weight, recovers much of
the lost accuracy and makes a pruned candidate's accuracy a far better predictor of its
accuracy after fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.data._split import BatchSource
from models.errors import DataError
from models.train._batches import module_device, on_device

__all__ = ["recalibrate_batchnorm", "stale_statistics_share"]


def tracking_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """Return the BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def stale_statistics_share(model: nn.Module, steps: int) -> float:
    """Return the largest share the running statistics of ``model``'s BatchNorm layers
    held before ``steps`` training steps still hold after them.

    A layer with ``momentum`` m keeps an exponential average, so what it held weighs
    ``(1 - m) ** steps`` afterwards (PyTorch's default m = 0.1: below 1 % after 44
    steps). A layer with ``momentum=None`` keeps a cumulative average over every batch
    it ever saw, its earlier ones included: it never forgets them, and counts as 1.0.
    A model without tracking BatchNorm layers gives 0.0.
    """
    if steps < 0:
        raise ValueError(f"steps must not be negative, got {steps}")
    shares = [
        1.0 if m.momentum is None else (1.0 - float(m.momentum)) ** steps
        for m in tracking_batchnorms(model)
    ]
    return max(shares, default=0.0)


def recalibrate_batchnorm(
    model: nn.Module, data: BatchSource, *, batches: int = 20, batch_size: int = 64, seed: int = 0
) -> int:
    """Re-estimate every BatchNorm layer's running statistics from ``data``; return samples.

    Each BatchNorm layer's running mean and variance are reset and then set to the plain
    average over the batches forwarded (``momentum=None``), so every batch counts the
    same. Only the BatchNorm layers run in train mode: the rest of the model (dropout,
    for instance) behaves as at inference, so the statistics are those the layers will
    see when the model is used. No weight changes. Afterwards each layer's momentum is
    restored and the whole model is in eval mode. Batches of a single sample are
    skipped, as train-mode BatchNorm may not be able to normalize them.

    Args:
        model: the model to recalibrate in place.
        data: split to draw the batches from (shuffled with ``seed``).
        batches: number of batches to forward.
        batch_size: samples per batch.
        seed: seeds the shuffle, so the same arguments give the same statistics.

    Returns:
        The number of samples forwarded; 0 if the model has no BatchNorm layer that
        tracks running statistics (then nothing is forwarded and nothing changes).

    Raises:
        DataError: ``data`` gave no batch of at least two samples; the statistics are
            then left as they were.
        ValueError: ``batches`` or ``batch_size`` is not positive.
    """
    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = tracking_batchnorms(model)
    if not layers:
        model.eval()
        return 0
    device = module_device(model)
    momenta = [m.momentum for m in layers]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    seen = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            stream = data.batches(batch_size, shuffle=True, seed=seed, limit=batches)
            for inputs, _ in on_device(stream, device):
                if inputs.shape[0] < 2:
                    continue
                model(inputs)
                seen += inputs.shape[0]
        if seen == 0:
            raise DataError(
                "BatchNorm recalibration needs at least one batch of two or more samples; "
                "the split gave none"
            )
    except BaseException:
        for m, state in zip(layers, saved, strict=True):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return seen
