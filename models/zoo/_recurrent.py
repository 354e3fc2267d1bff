"""Recurrent classifiers: stacked LSTM or GRU layers over (N, T, F) sequences.

Each recurrent layer is its own single-layer ``nn.LSTM``/``nn.GRU`` (batch_first) in
``layers``, not one ``num_layers=k`` module: a multi-layer torch RNN forces every layer
to one hidden size, while pruning gives each layer its own width.

``lstm_classifier`` and ``gru_classifier`` are 2 layers of 64 hidden units; any depth
from 1 to :data:`MAX_LAYERS` and width from 1 to :data:`MAX_HIDDEN` is named
``<cell>_classifier_<layers>x<hidden>`` (``lstm_classifier_3x128``, ``gru_classifier_1x100``):
``_1x32`` and ``_3x128`` are listed, the others resolved when first named. A
mean-over-time readout is one :func:`register` call with :class:`RecurrentClassifier`
away (e.g. from a plugin package).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from models.errors import ModelsError
from models.zoo._registry import Architecture, Builder, InputShape, register, register_resolver

__all__ = ["CELLS", "MAX_HIDDEN", "MAX_LAYERS", "READOUTS", "RecurrentClassifier"]

MAX_LAYERS = 3
"""The deepest stack a ``<cell>_classifier_<layers>x<hidden>`` name may ask for."""
MAX_HIDDEN = 4096
"""The widest layer such a name may ask for."""

Cell = Literal["lstm", "gru"]
Readout = Literal["last", "mean"]

CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}
"""Cell name → torch module; an LSTM unit has 4 gate rows per weight, a GRU unit 3."""
READOUTS = ("last", "mean")


class RecurrentClassifier(nn.Module):
    """Stacked single-layer RNNs, then a linear classifier on the last step or the mean.

    Input (N, T, F), output (N, num_classes).
    """

    def __init__(
        self,
        cell: Cell,
        num_classes: int,
        input_size: int,
        hidden_sizes: Sequence[int],
        readout: Readout = "last",
    ) -> None:
        """Build the layers.

        Args:
            cell: ``lstm`` or ``gru``.
            num_classes: size of the classifier output.
            input_size: F, the features of one time step.
            hidden_sizes: hidden units of each recurrent layer, first to last (1 or more).
            readout: ``last`` (the last time step) or ``mean`` (mean over time).

        Raises:
            ModelsError: an unknown cell or readout, or no layers.
        """
        super().__init__()
        if cell not in CELLS:
            raise ModelsError(f"unknown recurrent cell {cell!r}; known: {', '.join(CELLS)}")
        if readout not in READOUTS:
            raise ModelsError(f"unknown readout {readout!r}; known: {', '.join(READOUTS)}")
        if not hidden_sizes or min(hidden_sizes) < 1:
            raise ModelsError(f"hidden sizes must be positive, got {list(hidden_sizes)}")
        self.cell = cell
        self.readout = readout
        rnn = CELLS[cell]
        widths = [input_size, *hidden_sizes]
        self.layers = nn.ModuleList(
            rnn(widths[i], widths[i + 1], batch_first=True) for i in range(len(hidden_sizes))
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x)
        x = x[:, -1] if self.readout == "last" else x.mean(dim=1)
        return self.fc(x)


def _builder(cell: Cell, layers: int, hidden: int) -> Builder:
    def build(num_classes: int, shape: InputShape) -> nn.Module:
        return RecurrentClassifier(cell, num_classes, shape[1], [hidden] * layers)

    return build


def _architecture(name: str, cell: Cell, layers: int, hidden: int) -> Architecture:
    return Architecture(
        name=name,
        build=_builder(cell, layers, hidden),
        family="recurrent",
        default_input_shape=(8, 8),
        default_num_classes=10,
        input_rank=2,
    )


_SIZED = re.compile(r"(lstm|gru)_classifier_(\d+)x(\d+)")


def _resolve(name: str) -> Architecture | None:
    """Return the architecture ``<cell>_classifier_<layers>x<hidden>`` names, within
    :data:`MAX_LAYERS` and :data:`MAX_HIDDEN`, else None."""
    match = _SIZED.fullmatch(name)
    if match is None:
        return None
    cell, layers, hidden = match.group(1), int(match.group(2)), int(match.group(3))
    if not (1 <= layers <= MAX_LAYERS and 1 <= hidden <= MAX_HIDDEN):
        return None
    return _architecture(name, "lstm" if cell == "lstm" else "gru", layers, hidden)


_LISTED_CELLS: tuple[Cell, ...] = ("lstm", "gru")
for _cell in _LISTED_CELLS:
    register(_architecture(f"{_cell}_classifier", _cell, 2, 64))
    for _layers, _hidden in ((1, 32), (3, 128)):
        register(_architecture(f"{_cell}_classifier_{_layers}x{_hidden}", _cell, _layers, _hidden))
register_resolver(_resolve)
