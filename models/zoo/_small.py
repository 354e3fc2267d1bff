"""Small networks: LeNet-5 and the tiny CNN the tests use."""

from __future__ import annotations

import torch
from torch import nn

from models.zoo._registry import Architecture, InputShape, register


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling; any input size."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        # classic LeNet-5 sees 5x5 maps here for 28x28 inputs; other sizes are pooled to it
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TinyCNN(nn.Module):
    """A few-thousand-parameter CNN with a residual add, a strided stage and BN.

    Small enough that a test prunes, fine-tunes and exports it in well under a second,
    rich enough to have coupled channels (the residual) and several prunable groups.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.conv_a = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(24)
        self.conv_b = nn.Conv2d(24, 16, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(16)
        self.down = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn_a(self.conv_a(x)))
        x = torch.relu(x + self.bn_b(self.conv_b(y)))
        x = self.down(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _build_lenet(num_classes: int, shape: InputShape) -> nn.Module:
    return LeNet5(num_classes, shape[0])


def _build_tiny(num_classes: int, shape: InputShape) -> nn.Module:
    return TinyCNN(num_classes, shape[0])


register(Architecture("lenet5", _build_lenet, "small", (1, 28, 28), 10, min_spatial=8))
register(Architecture("tiny_cnn", _build_tiny, "small", (3, 16, 16), 10, min_spatial=2))
