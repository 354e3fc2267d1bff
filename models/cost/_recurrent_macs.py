"""MACs of torch's fused recurrent ops, which fvcore does not count on its own.

A traced ``nn.LSTM``/``nn.GRU`` is one ``aten::lstm``/``aten::gru`` node; fvcore skips it
as an unsupported op, so a recurrent classifier would seem to cost only its classifier.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

with warnings.catch_warnings():  # fvcore scripts a helper at import: torch warns about jit
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn.jit_handles import get_shape

__all__ = ["RECURRENT_GATES", "recurrent_macs", "recurrent_op_handles"]

RECURRENT_GATES = {"lstm": 4, "gru": 3}
"""Gate blocks per hidden unit: rows of ``weight_ih``/``weight_hh`` that one unit owns."""


def recurrent_macs(
    cell: str,
    steps: int,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch: int = 1,
) -> int:
    """Return the MACs of one recurrent module's forward pass over a sequence.

    Counts the input-to-hidden and hidden-to-hidden products of every gate, time step,
    layer and direction (one per multiply-add, like fvcore's conv and linear counts);
    the element-wise gate arithmetic is left out, as fvcore leaves out activations.

    Args:
        cell: ``lstm`` or ``gru``.
        steps: T, the sequence length.
        input_size: F, the features the first layer reads at each step.
        hidden_size: H, the hidden units of each layer and direction.
        num_layers: stacked layers inside the module.
        bidirectional: whether each layer runs both ways.
        batch: N, the sequences in the batch.

    Returns:
        The multiply-accumulates.

    Raises:
        KeyError: an unknown cell.
    """
    gates = RECURRENT_GATES[cell]
    directions = 2 if bidirectional else 1
    inputs = [input_size] + [directions * hidden_size] * (num_layers - 1)
    per_step = sum(gates * hidden_size * (width + hidden_size) for width in inputs)
    return batch * steps * directions * per_step


def _handle(cell: str) -> Callable[[list[Any], list[Any]], int]:
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        # aten::lstm/gru(input, hx, params, has_biases, num_layers, dropout, train,
        #                bidirectional, batch_first)
        in_shape = get_shape(inputs[0])
        out_shape = get_shape(outputs[0])
        if not in_shape or not out_shape:
            return 0
        num_layers = int(inputs[4].toIValue())
        bidirectional = bool(inputs[7].toIValue())
        batch_first = bool(inputs[8].toIValue())
        if len(in_shape) == 2:  # unbatched (T, F)
            batch, steps = 1, in_shape[0]
        elif batch_first:
            batch, steps = in_shape[0], in_shape[1]
        else:
            steps, batch = in_shape[0], in_shape[1]
        directions = 2 if bidirectional else 1
        return recurrent_macs(
            cell,
            steps,
            in_shape[-1],
            out_shape[-1] // directions,
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch=batch,
        )

    return handle


def recurrent_op_handles() -> dict[str, Callable[[list[Any], list[Any]], int]]:
    """Return fvcore op handles for ``aten::lstm`` and ``aten::gru``.

    Returns:
        Op name → handle, for ``FlopCountAnalysis.set_op_handle(**handles)``.
    """
    return {f"aten::{cell}": _handle(cell) for cell in RECURRENT_GATES}
