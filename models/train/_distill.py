"""The knowledge-distillation loss of Hinton et al. (2015)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["distillation_loss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight: float,
    temperature: float,
) -> torch.Tensor:
    """Return ``(1 - weight) · CE(student, labels) + weight · T² · KL(teacher ‖ student)``.

    Both outputs are softened by ``temperature`` before the KL divergence; the T² factor
    keeps the soft term's gradients on the scale of the hard term's as T changes.

    Args:
        student_logits: (B, classes) outputs of the model being trained.
        teacher_logits: (B, classes) outputs of the frozen teacher (no grad).
        labels: (B,) class indices.
        weight: share of the soft (teacher) term, in [0, 1].
        temperature: softening temperature T > 0.

    Returns:
        The scalar loss.
    """
    hard = F.cross_entropy(student_logits, labels)
    if weight == 0.0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    return (1.0 - weight) * hard + weight * soft
