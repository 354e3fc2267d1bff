"""How much memory a spec's model needs, known before the model is built.

Validating an upload builds the model and traces it at the spec's input shape; at
[3, 3000, 3000] that alone would take tens of GiB. So the size is estimated first,
without allocating anything: the model is built on PyTorch's ``meta`` device (tensors
with shapes and no storage) and run once there, counting parameters, activations and
MACs. An architecture that cannot be built on ``meta`` is measured at its own default
input shape and scaled to the requested one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.uploads._errors import UploadError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MAX_MODEL_BYTES", "ModelSize", "check_model_size", "estimate_model_size"]

logger = logging.getLogger(__name__)

MAX_MODEL_BYTES = 4 * 2**30
"""Default limit on :attr:`ModelSize.bytes` (``INFERPRUNE_MAX_MODEL_BYTES``). By that
estimate ResNet-50 needs 0.34 GiB at 224x224 and 1.35 GiB at 512x512, VGG-16 0.73 GiB
at 224x224; EfficientNet-B7 at its own 600x600 needs 6.7 GiB (a server for it raises
the limit)."""
_BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class ModelSize:
    """What one forward pass of a model at batch 1 holds.

    Attributes:
        params: parameters.
        activations: values the layers output in one forward pass (the input included);
            tracing for the pruning graph keeps about this many alive at once.
        macs: multiply-accumulates of its convolutions and linear layers.
        exact: False when the numbers were scaled from the default input shape (then
            they bound the true ones from above).
    """

    params: int
    activations: int
    macs: int
    exact: bool = True

    @property
    def bytes(self) -> int:
        """Estimated float32 memory of validating the model: its parameters, plus its
        activations twice (tracing keeps what autograd saves besides the outputs; measured
        peaks stay below this)."""
        return (self.params + 2 * self.activations) * _BYTES_PER_VALUE


def estimate_model_size(
    arch: str, num_classes: int | None, input_shape: tuple[int, ...] | None
) -> ModelSize:
    """Return the memory ``arch`` needs at ``input_shape``, without allocating it.

    Args:
        arch: a zoo architecture name.
        num_classes: classifier outputs; the architecture's default if None.
        input_shape: (C, H, W); the architecture's default if None.

    Returns:
        The :class:`ModelSize`.

    Raises:
        ModelsError: unknown architecture, or classes / shape it refuses.
    """
    import torch

    from models.zoo import build_model, get_architecture, normalize_shape

    spec = get_architecture(arch)
    shape = normalize_shape(input_shape) if input_shape is not None else spec.default_input_shape
    try:
        with torch.device("meta"):
            model = build_model(arch, num_classes, shape)
        return _measure(model, shape, "meta")
    except (NotImplementedError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        # the builder copies real data into a tensor (regnet's init does): measure it at
        # its own size and scale the spatial part
        logger.debug("%s cannot be sized on the meta device (%s); scaling", arch, exc)
    reference = spec.default_input_shape
    model = build_model(arch, num_classes, reference)
    base = _measure(model, reference, "cpu")
    linear = _linear_params(model)  # the only parameters that may grow with the input
    del model
    pixels = max(1.0, (shape[1] * shape[2]) / (reference[1] * reference[2]))
    channels = max(1.0, shape[0] / reference[0])
    return ModelSize(
        params=base.params + math.ceil(linear * (pixels - 1)),
        activations=math.ceil(base.activations * pixels * channels),
        macs=math.ceil(base.macs * pixels * channels),
        exact=False,
    )


def _linear_params(model: nn.Module) -> int:
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def _measure(model: nn.Module, shape: tuple[int, ...], device: str) -> ModelSize:
    import torch
    from torch import nn

    counts = {"activations": math.prod(shape), "macs": 0}

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        counts["activations"] += output.numel()
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            counts["macs"] += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            counts["macs"] += output.numel() * module.in_features

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return ModelSize(params, counts["activations"], counts["macs"])


def check_model_size(
    arch: str,
    num_classes: int | None,
    input_shape: tuple[int, ...] | None,
    max_bytes: int,
) -> ModelSize:
    """Return the model's :class:`ModelSize` once it is within ``max_bytes``.

    Call it before building the model for real: it allocates nothing that grows with
    the model or the input.

    Raises:
        UploadError: ``model_too_large`` (the message gives the estimate, its parts,
            the limit and the setting that raises it); ``invalid_spec`` when the
            architecture refuses the classes or shape.
    """
    from models.errors import ModelsError

    try:
        size = estimate_model_size(arch, num_classes, input_shape)
    except ModelsError as exc:
        raise UploadError("invalid_spec", str(exc)) from None
    if size.bytes > max_bytes:
        shape = f"input_shape {list(input_shape)}" if input_shape else "its default input shape"
        raise UploadError(
            "model_too_large",
            f"{arch} at {shape} needs about {_gib(size.bytes)} for one input "
            f"({size.params:,} parameters, {size.activations:,} activation values, "
            f"{size.macs:,} MACs); this server accepts models up to {_gib(max_bytes)} "
            "(INFERPRUNE_MAX_MODEL_BYTES): use a smaller input_shape or architecture",
        )
    return size


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.0f} MiB"
