"""Placing batches on the model's device and checking their labels fit its outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

import torch
from torch import nn

from models.errors import DataError

__all__ = [
    "LabelChecks",
    "check_label_range",
    "check_labels",
    "check_logits_shape",
    "module_device",
    "on_device",
]

Tensors = TypeVar("Tensors", bound=tuple[torch.Tensor, ...])
"""A batch: ``(inputs, labels)``, or with more tensors per sample after them (such as a
teacher's logits)."""


def module_device(module: nn.Module) -> torch.device:
    """Return the device of the module's first parameter or buffer (CPU if it has none)."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def on_device(batches: Iterable[Tensors], device: torch.device) -> Iterator[Tensors]:
    """Yield ``batches`` (tuples of tensors) on ``device``. On CUDA each batch is copied
    from pinned memory without blocking, one batch ahead: the next copy runs while the
    device computes on the current one. On the CPU the batches pass through untouched."""
    if device.type == "cpu":
        yield from batches
        return
    pin = device.type == "cuda"

    def move(batch: Tensors) -> Tensors:
        if pin:
            return cast(Tensors, tuple(t.pin_memory().to(device, non_blocking=True) for t in batch))
        return cast(Tensors, tuple(t.to(device) for t in batch))

    ahead: Tensors | None = None
    for batch in batches:
        moved = move(batch)
        if ahead is not None:
            yield ahead
        ahead = moved
    if ahead is not None:
        yield ahead


def check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise unless ``logits`` are (B, classes) and every label is a valid class index.

    Reading the labels' range synchronises with an accelerator; a training loop checks
    later batches on the CPU with :func:`check_label_range` instead.

    Raises:
        DataError: the model does not output one row of class scores per sample, or a
            label is negative or not below the number of classes the model outputs.
    """
    check_logits_shape(logits, labels)
    if labels.numel():
        check_label_range(labels, logits.shape[1])


def check_logits_shape(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise unless ``logits`` hold one row of class scores per label (shapes only: no
    synchronisation with an accelerator)."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise DataError(
            f"the model gave outputs of shape {tuple(logits.shape)} for a batch of "
            f"{labels.shape[0]} samples; expected ({labels.shape[0]}, num_classes)"
        )


def check_label_range(labels: torch.Tensor, classes: int) -> None:
    """Raise unless every label is a class index below ``classes``."""
    if not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise DataError(
            f"labels range from {low} to {high} but the model outputs {classes} classes; "
            "build the model with the data set's number of classes"
        )


@dataclass
class LabelChecks:
    """Checks that every batch's labels fit the model's outputs, on the CPU where it can.

    Reading labels on an accelerator waits for it, so once the model's class count is
    known (from the first batch's logits) the labels of later batches are checked on the
    CPU before they travel (:meth:`on_cpu`, wrapped around the batches given to
    :func:`on_device`). Batches that left before that (:func:`on_device` copies one
    ahead) are checked where they are, after the forward pass (:meth:`after_forward`).
    """

    classes: int | None = None
    _checked_on_cpu: list[bool] = field(default_factory=list)

    def on_cpu(self, batches: Iterable[Tensors]) -> Iterator[Tensors]:
        """Yield ``batches`` (``(inputs, labels, ...)``), checking their labels first once
        the class count is known."""
        for batch in batches:
            self._checked_on_cpu.append(self.classes is not None)
            if self.classes is not None:
                check_label_range(batch[1], self.classes)
            yield batch

    def after_forward(self, index: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Check batch ``index``'s ``logits`` shape, and its labels unless :meth:`on_cpu`
        already did (learning the class count from the first)."""
        if self._checked_on_cpu[index]:
            check_logits_shape(logits, labels)
        else:
            check_labels(logits, labels)
            self.classes = int(logits.shape[1])
