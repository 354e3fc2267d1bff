"""What a network is: the architecture registry.

``build_model(name, num_classes, input_shape)`` builds any registered architecture:
CIFAR-style ResNets and VGGs, LeNet-5, a tiny CNN for tests, the torchvision
classification models pruning can handle, LSTM/GRU sequence classifiers (input shape
(T, F) instead of (C, H, W): ``Architecture.input_rank``), and plugins registered by
installed packages under the entry-point group ``inferprune.models`` (never code
uploaded over HTTP).
"""

from __future__ import annotations

from models.zoo import _cifar, _recurrent, _small, _torchvision  # noqa: F401  (they register)
from models.zoo._recurrent import RecurrentClassifier
from models.zoo._registry import (
    ENTRY_POINT_GROUP,
    INPUT_RANKS,
    Architecture,
    Builder,
    InputShape,
    build_model,
    get_architecture,
    list_architectures,
    normalize_shape,
    register,
)
from models.zoo._torchvision import UNSUPPORTED_TORCHVISION

__all__ = [
    "ENTRY_POINT_GROUP",
    "INPUT_RANKS",
    "UNSUPPORTED_TORCHVISION",
    "Architecture",
    "Builder",
    "InputShape",
    "RecurrentClassifier",
    "build_model",
    "get_architecture",
    "list_architectures",
    "normalize_shape",
    "register",
]
