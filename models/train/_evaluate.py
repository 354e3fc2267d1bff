"""Top-1 / top-5 accuracy and mean loss of a model on a split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.data._split import BatchSource
from models.errors import DataError
from models.train._batches import LabelChecks, module_device, on_device

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """How well a model classifies a split.

    Attributes:
        top1: share of samples whose highest-scoring class is the label, in [0, 1].
        top5: share of samples whose label is among the ``min(5, num_classes)``
            highest-scoring classes, in [0, 1] (1.0 when there are at most 5 classes).
        loss: mean cross-entropy per sample.
        samples: number of samples evaluated.
    """

    top1: float
    top5: float
    loss: float
    samples: int


def evaluate(
    model: nn.Module, data: BatchSource, *, batch_size: int = 256, limit: int | None = None
) -> Evaluation:
    """Return the model's top-1, top-5 accuracy and mean cross-entropy on ``data``.

    The model is put in eval mode (and left there) and run without autograd, on the
    device its parameters live on.

    Args:
        model: a classifier giving (B, num_classes) logits.
        data: the split to evaluate on, in its fixed order.
        batch_size: samples per forward pass.
        limit: evaluate at most this many batches (all when ``None``).

    Returns:
        The :class:`Evaluation`.

    Raises:
        DataError: ``data`` yields no samples, or its labels do not fit the model's
            outputs.
        ValueError: ``batch_size`` or ``limit`` is not positive.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 batch, got {limit}")
    device = module_device(model)
    model.eval()
    # hits, top-5 hits and summed loss stay on the device until the end (reading them
    # every batch would wait for an accelerator each time)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    samples = 0
    labels_fit = LabelChecks()
    with torch.inference_mode():
        batches = labels_fit.on_cpu(data.batches(batch_size, limit=limit))
        for index, (inputs, labels) in enumerate(on_device(batches, device)):
            logits = model(inputs)
            labels_fit.after_forward(index, logits, labels)
            k = min(5, logits.shape[1])
            best = logits.topk(k, dim=1).indices
            hits = best == labels.unsqueeze(1)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            counts = (hits[:, 0].sum(), hits.any(dim=1).sum(), loss)
            totals += torch.stack([value.double() for value in counts])
            samples += labels.shape[0]
    if samples == 0:
        raise DataError("there are no samples to evaluate on; the split is empty")
    top1, top5, loss_sum = totals.tolist()  # the one read back
    return Evaluation(
        top1=top1 / samples, top5=top5 / samples, loss=loss_sum / samples, samples=samples
    )
