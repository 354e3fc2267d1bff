"""Placing batches on the model's device and checking their labels fit its outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from models.errors import DataError

__all__ = ["check_labels", "module_device", "on_device"]


def module_device(module: nn.Module) -> torch.device:
    """Return the device of the module's first parameter or buffer (CPU if it has none)."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def on_device(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``batches`` on ``device``. On CUDA each batch is copied from pinned memory
    without blocking, one batch ahead: the next copy runs while the device computes on
    the current one. On the CPU the batches pass through untouched."""
    if device.type == "cpu":
        yield from batches
        return
    pin = device.type == "cuda"

    def move(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = batch
        if pin:
            inputs, labels = inputs.pin_memory(), labels.pin_memory()
        return inputs.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)

    ahead: tuple[torch.Tensor, torch.Tensor] | None = None
    for batch in batches:
        moved = move(batch)
        if ahead is not None:
            yield ahead
        ahead = moved
    if ahead is not None:
        yield ahead


def check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise unless ``logits`` are (B, classes) and every label is a valid class index.

    Raises:
        DataError: the model does not output one row of class scores per sample, or a
            label is negative or not below the number of classes the model outputs.
    """
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise DataError(
            f"the model gave outputs of shape {tuple(logits.shape)} for a batch of "
            f"{labels.shape[0]} samples; expected ({labels.shape[0]}, num_classes)"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise DataError(
            f"labels range from {int(labels.min())} to {int(labels.max())} but the model "
            f"outputs {logits.shape[1]} classes; build the model with the data set's "
            "number of classes"
        )
