"""torchvision's classification models, randomly initialised (weights come from users)."""

from __future__ import annotations

import warnings
from typing import Any

import torchvision
from torch import nn

from models.zoo._registry import Architecture, InputShape, register

# Each was tried with a random plan: Torch-Pruning cannot prune these correctly.
UNSUPPORTED_TORCHVISION: dict[str, str] = {
    "maxvit_t": (
        "takes only 224x224 inputs (window partition), and at 224 Torch-Pruning's grouping "
        "does not finish within 10 minutes"
    ),
    **dict.fromkeys(
        ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"],
        "channel shuffle: Torch-Pruning cannot map channel indices through its view into "
        "groups (ZeroDivisionError while tracing)",
    ),
    **dict.fromkeys(
        ["swin_b", "swin_s"],
        "patch merging concatenates strided slices whose channels Torch-Pruning cannot "
        "infer (TypeError while tracing)",
    ),
    **dict.fromkeys(
        ["swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t"],
        "Torch-Pruning treats the window reshapes as flattens and multiplies the channel "
        "indices: grouping does not finish within 10 minutes (swin_t reached 17 GB)",
    ),
    **dict.fromkeys(
        ["vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"],
        "takes only 224x224 inputs, and forward reshapes with the fixed hidden_dim "
        "attribute, so a narrower patch embedding fails with a shape error",
    ),
}

_MIN_SPATIAL = {"alexnet": 63, "inception_v3": 75, "googlenet": 32}
_INPUT_SHAPE = {"inception_v3": (3, 299, 299)}


def _classification_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _adapt_input_channels(model: nn.Module, channels: int) -> None:
    """Replace the first convolution so that the model takes ``channels`` input channels."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(
                    channels,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    child.stride,  # type: ignore[arg-type]
                    child.padding,  # type: ignore[arg-type]
                    child.dilation,  # type: ignore[arg-type]
                    1,
                    child.bias is not None,
                )
                setattr(parent, child_name, new)
                return
            if list(child.children()):
                break  # descend in module order: handled by the outer loop


def _builder(name: str) -> Any:
    def build(num_classes: int, shape: InputShape) -> nn.Module:
        kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, **kwargs)
        if shape[0] != 3:
            _adapt_input_channels(model, shape[0])
        return model

    return build


for _name in _classification_models():
    if _name in UNSUPPORTED_TORCHVISION:
        continue
    register(
        Architecture(
            name=_name,
            build=_builder(_name),
            family="torchvision",
            default_input_shape=_INPUT_SHAPE.get(_name, (3, 224, 224)),
            default_num_classes=1000,
            min_spatial=_MIN_SPATIAL.get(_name, 32),
        )
    )
