"""Fixtures for the models tests: tiny networks and calibration batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.zoo import build_model


@pytest.fixture
def tiny() -> nn.Module:
    """The tiny CNN (3x16x16 inputs, 10 classes), randomly initialised."""
    return build_model("tiny_cnn", 10, (3, 16, 16))


@pytest.fixture
def calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four seeded calibration batches for 3x16x16 inputs."""
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))
        for _ in range(4)
    ]
