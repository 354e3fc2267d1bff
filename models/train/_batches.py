"""Placing batches on the model's device and checking their labels fit its outputs."""

from __future__ import annotations

import torch
from torch import nn

from models.errors import DataError

__all__ = ["check_labels", "module_device"]


def module_device(module: nn.Module) -> torch.device:
    """Return the device of the module's first parameter or buffer (CPU if it has none)."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


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
