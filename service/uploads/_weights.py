"""Uploaded weights: readable, safe, unpruned, finite, and fitting the spec's architecture.

torch and :mod:`models` are imported inside the functions: the API imports this
package at start-up and must start fast; the checks run later, in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.spec import JobSpec
from service.uploads._errors import UploadError
from service.uploads._model_size import MAX_MODEL_BYTES, check_model_size

if TYPE_CHECKING:
    from torch import nn

    from models.io import CheckpointInfo, StateDict

__all__ = ["OpenedModel", "WeightsCheck", "open_model", "validate_weights"]


@dataclass(frozen=True)
class WeightsCheck:
    """What an accepted weights upload holds.

    Attributes:
        format: ``safetensors``, ``torch-zip`` (``torch.save``) or ``torch-legacy``.
        arch: the architecture the weights were loaded into (the spec's).
        num_classes: classifier outputs: the spec's, else the checkpoint's metadata,
            else read off the output layer's weight.
        input_shape: (C, H, W): the spec's, else the checkpoint's, else the
            architecture's default.
        num_tensors: tensors in the file.
        from_checkpoint: True for an inferprune checkpoint (it carries its own arch,
            classes and input shape, which agree with the spec).
    """

    format: str
    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    num_tensors: int
    from_checkpoint: bool


@dataclass(frozen=True)
class OpenedModel:
    """The spec's model, built and (if weights were given) loaded.

    Attributes:
        model: the network, on the CPU, in eval mode.
        num_classes: its classifier outputs.
        input_shape: its (C, H, W).
        weights: what the weights upload held, or None for random initialization.
    """

    model: nn.Module
    num_classes: int
    input_shape: tuple[int, ...]
    weights: WeightsCheck | None


def validate_weights(
    spec: JobSpec,
    data: bytes,
    *,
    num_classes: int | None = None,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> WeightsCheck:
    """Return what the weights file ``data`` holds, once it loads into the spec's model.

    The file is read as safetensors or with ``torch.load(..., weights_only=True)``; a
    pickle asking for anything beyond tensors is refused before any of it runs.

    Args:
        spec: the job's spec (arch, num_classes, input_shape).
        data: the uploaded file's bytes.
        num_classes: classes to assume when neither the spec nor the file says (for
            instance an uploaded data set's); by default read off the weights.
        max_model_bytes: the most memory the model may need (see
            :func:`check_model_size`), checked before it is built.

    Returns:
        The :class:`WeightsCheck`.

    Raises:
        UploadError: ``unsafe_weights`` (a pickle with a code payload; not run),
            ``invalid_weights`` (not a weights file, damaged, or NaN / infinite values),
            ``already_pruned`` (an inferprune checkpoint with a plan),
            ``weights_mismatch`` (other architecture, classes or input shape; the message
            names the first mismatching keys) or ``invalid_spec`` (the spec's shape does
            not suit the architecture), ``model_too_large`` (the model at the spec's
            input shape needs more than ``max_model_bytes``; nothing was built).
    """
    opened = open_model(spec, data, num_classes=num_classes, max_model_bytes=max_model_bytes)
    assert opened.weights is not None
    return opened.weights


def open_model(
    spec: JobSpec,
    weights: bytes | None,
    *,
    num_classes: int | None = None,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> OpenedModel:
    """Build the spec's model and load ``weights`` into it (random init when None).

    Every build is preceded by :func:`check_model_size`, so a spec whose model would
    not fit in ``max_model_bytes`` is refused before anything big is allocated.

    Args:
        spec: the job's spec.
        weights: the uploaded weights, or None; with no ``arch`` in the spec, the
            uploaded ONNX model (see :func:`service.uploads._onnx.open_onnx`).
        num_classes: classes to assume when neither the spec nor the weights say.
        max_model_bytes: the most memory the model may need.

    Returns:
        The :class:`OpenedModel`.

    Raises:
        UploadError: as :func:`validate_weights`.
    """
    from models.errors import UnsafeFileError, WeightsError
    from models.io import read_state_dict, weights_format

    if spec.arch is None and weights is not None:  # an uploaded ONNX model
        from service.uploads._onnx import open_onnx

        imported = open_onnx(weights)
        return OpenedModel(imported.model, imported.num_classes, imported.input_shape, None)
    if weights is None:
        classes = spec.num_classes or num_classes
        model, classes, shape = _build(spec, classes, spec.input_shape, max_bytes=max_model_bytes)
        return OpenedModel(model, classes, shape, None)
    try:
        state = read_state_dict(weights)
    except UnsafeFileError as exc:
        raise UploadError("unsafe_weights", str(exc)) from None
    except WeightsError as exc:
        raise UploadError("invalid_weights", str(exc)) from None
    stored = _checkpoint_info(weights)
    if stored is not None:
        _check_agreement(spec, stored)
    classes = spec.num_classes or (stored.num_classes if stored else None) or num_classes
    wanted_shape = spec.input_shape or (stored.input_shape if stored else None)
    model, classes, shape = _build(
        spec, classes, wanted_shape, state=state, max_bytes=max_model_bytes
    )
    _load(model, state, zoo_arch(spec))
    check = WeightsCheck(
        format=weights_format(weights),
        arch=zoo_arch(spec),
        num_classes=classes,
        input_shape=shape,
        num_tensors=len(state),
        from_checkpoint=stored is not None,
    )
    return OpenedModel(model, classes, shape, check)


def zoo_arch(spec: JobSpec) -> str:
    """Return the spec's zoo architecture, or refuse a spec without one (a job needs the
    architecture named, or its model given: see ``search.prune_module``)."""
    if spec.arch is None:
        raise UploadError("invalid_spec", "arch: name a zoo architecture, such as resnet20_cifar")
    return spec.arch


def _checkpoint_info(data: bytes) -> CheckpointInfo | None:
    from models.errors import WeightsError
    from models.io import read_checkpoint_info, weights_format

    if weights_format(data) != "safetensors":
        return None
    try:
        return read_checkpoint_info(data)
    except WeightsError:
        return None  # plain safetensors: the spec describes them


def _check_agreement(spec: JobSpec, stored: CheckpointInfo) -> None:
    if len(stored.plan):
        raise UploadError(
            "already_pruned",
            f"these weights are an inferprune checkpoint already pruned ({len(stored.plan)} "
            "groups narrowed); submit the unpruned model it came from",
        )
    conflicts = []
    if stored.arch != spec.arch:
        conflicts.append(f"architecture {stored.arch}, not {spec.arch}")
    if spec.num_classes is not None and stored.num_classes != spec.num_classes:
        conflicts.append(f"num_classes {stored.num_classes}, not {spec.num_classes}")
    if spec.input_shape is not None and tuple(stored.input_shape) != tuple(spec.input_shape):
        conflicts.append(f"input_shape {list(stored.input_shape)}, not {list(spec.input_shape)}")
    if conflicts:
        raise UploadError(
            "weights_mismatch",
            "the checkpoint was saved for " + "; ".join(conflicts) + ". Fix the spec or "
            "upload the matching weights",
        )


def _build(
    spec: JobSpec,
    num_classes: int | None,
    input_shape: tuple[int, ...] | None,
    *,
    state: StateDict | None = None,
    max_bytes: int,
) -> tuple[nn.Module, int, tuple[int, ...]]:
    """Build the spec's architecture, once its size is known to fit ``max_bytes``;
    without a class count, read it off ``state``."""
    from models.errors import ModelsError
    from models.zoo import build_model, get_architecture

    name = zoo_arch(spec)
    try:
        arch = get_architecture(name)
        shape = input_shape or arch.default_input_shape
        check_model_size(name, num_classes, shape, max_bytes)
        model = build_model(name, num_classes, shape)
        if num_classes is None and state is not None:
            stored = _output_classes(model, shape, state)
            if stored is not None and stored != arch.default_num_classes:
                check_model_size(name, stored, shape, max_bytes)
                model = build_model(name, stored, shape)
                num_classes = stored
    except ModelsError as exc:
        raise UploadError("invalid_spec", str(exc)) from None
    return model, num_classes or arch.default_num_classes, shape


def _output_classes(model: nn.Module, shape: tuple[int, ...], state: StateDict) -> int | None:
    """Return the output width the weights give the model's logits layer, if they say."""
    import torch

    from models.prune import find_output_layer

    layer = find_output_layer(model, torch.zeros((1, *shape)))
    weight = state.get(f"{layer}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None


def _load(model: nn.Module, state: StateDict, arch: str) -> None:
    from models.errors import WeightsError
    from models.io import check_finite, fit_state_dict

    try:
        fit_state_dict(model, state, arch=arch)
    except WeightsError as exc:
        raise UploadError("weights_mismatch", str(exc)) from None
    try:
        check_finite(state)
    except WeightsError as exc:
        raise UploadError("invalid_weights", f"{exc}; upload weights from a healthy run") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UploadError(
            "invalid_weights", f"the weights do not load: {str(exc).splitlines()[0][:300]}"
        ) from None
    model.eval()
