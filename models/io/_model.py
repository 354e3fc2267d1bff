"""Open the model a user means: an architecture, optionally with weights or a checkpoint."""

from __future__ import annotations

import os

from torch import nn

from models.errors import WeightsError
from models.io._checkpoint import CheckpointInfo, load_pruned, read_checkpoint_info
from models.io._weights import load_weights, weights_format
from models.prune import Plan
from models.zoo import InputShape, build_model, get_architecture, normalize_shape

__all__ = ["load_model"]


def load_model(
    arch: str | None = None,
    weights: str | os.PathLike[str] | bytes | None = None,
    *,
    num_classes: int | None = None,
    input_shape: InputShape | None = None,
) -> tuple[nn.Module, CheckpointInfo]:
    """Return the model and its description from an architecture and/or a weights file.

    A checkpoint written by inferprune (``train`` or ``apply``) carries its architecture,
    classes, input shape and plan, so ``arch`` may be omitted; given values must agree
    with it. Any other weights file needs ``arch``. Without weights the model is
    randomly initialised.

    Args:
        arch: zoo architecture name.
        weights: path or bytes of safetensors or a torch state_dict, or None.
        num_classes: classifier outputs (the architecture's or checkpoint's by default).
        input_shape: (C, H, W) (the architecture's or checkpoint's by default).

    Returns:
        ``(model, info)``: the model in eval mode and what it is.

    Raises:
        UnknownArchitectureError: ``arch`` not in the zoo.
        UnsafeFileError: ``weights`` is a pickle with a code payload (not executed).
        WeightsError: unreadable weights, or weights that contradict the arguments.
    """
    info: CheckpointInfo | None = None
    if weights is not None and _has_metadata(weights):
        info = read_checkpoint_info(weights)
        _agree("architecture", arch, info.arch)
        _agree("num_classes", num_classes, info.num_classes)
        _agree("input shape", input_shape and normalize_shape(input_shape), info.input_shape)
        model, info = load_pruned(weights)
        return model, info
    if arch is None:
        raise WeightsError(
            "say which architecture these weights belong to (--arch); only checkpoints "
            "written by inferprune carry it"
        )
    spec = get_architecture(arch)
    classes = spec.default_num_classes if num_classes is None else num_classes
    shape = spec.default_input_shape if input_shape is None else normalize_shape(input_shape)
    model = build_model(arch, classes, shape)
    if weights is not None:
        load_weights(model, weights, arch=arch)
    return model.eval(), CheckpointInfo(arch, classes, shape, Plan())


def _has_metadata(weights: str | os.PathLike[str] | bytes) -> bool:
    data = weights if isinstance(weights, bytes) else None
    if data is None:
        try:
            with open(weights, "rb") as handle:
                data = handle.read(1 << 20)
        except OSError as exc:
            raise WeightsError(f"cannot read weights file {weights!s}: {exc.strerror}") from None
    if weights_format(data) != "safetensors":
        return False
    try:
        return read_checkpoint_info(weights) is not None
    except WeightsError:
        return False


def _agree(what: str, given: object, stored: object) -> None:
    if given is not None and given != stored:
        raise WeightsError(f"the checkpoint is for {what} {stored}, not {given}")
