"""Reading weights safely: safetensors, or a state_dict through ``weights_only=True``.

Nothing here ever unpickles arbitrary objects. A torch pickle is opened only with
``torch.load(..., weights_only=True)``, whose restricted unpickler refuses any global
that is not a tensor building block, so a payload that would run code is rejected
before it runs.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from models.errors import UnsafeFileError, WeightsError

__all__ = [
    "StateDict",
    "WeightsSource",
    "check_finite",
    "fit_state_dict",
    "load_weights",
    "read_state_dict",
    "weights_format",
]

StateDict = dict[str, torch.Tensor]
WeightsSource = str | os.PathLike[str] | bytes

_ZIP_MAGIC = b"PK\x03\x04"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _read_bytes(source: WeightsSource) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {source}: {exc.strerror or exc}") from None


def weights_format(data: bytes) -> str:
    """Return ``safetensors``, ``torch-zip``, ``torch-legacy`` or ``unknown`` for raw bytes."""
    if len(data) >= 10:
        (header_len,) = struct.unpack("<Q", data[:8])
        if 2 <= header_len <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if data.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if data[:1] == b"\x80" and len(data) > 2 and data[1] in range(2, 6):
        return "torch-legacy"
    return "unknown"


def read_state_dict(source: WeightsSource) -> StateDict:
    """Return the tensors of a weights file as a flat ``{name: tensor}`` dict.

    Accepts safetensors, or a file written by ``torch.save(model.state_dict())`` (also
    wrapped as ``{"state_dict": ...}``; a ``module.`` prefix from DataParallel is
    dropped). Torch files are read with ``torch.load(..., weights_only=True)``.

    Args:
        source: a path, or the file's bytes.

    Raises:
        UnsafeFileError: a pickle that asks for anything but tensors (it is not run).
        WeightsError: not a weights file, unreadable, or holding no tensors.
    """
    data = _read_bytes(source)
    kind = weights_format(data)
    loaded: Mapping[str, object]
    if kind == "safetensors":
        try:
            loaded = load_safetensors_bytes(data)
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise WeightsError(f"damaged safetensors file: {exc}") from None
    elif kind in ("torch-zip", "torch-legacy"):
        loaded = _torch_load(data)
    else:
        raise WeightsError(
            "not a weights file: expected safetensors or a torch.save()d state_dict "
            "(.pt/.pth); got something else (text? an archive?)"
        )
    tensors = _unwrap(loaded)
    if not tensors:
        raise WeightsError("the weights file holds no tensors")
    return tensors


def _torch_load(data: bytes) -> Mapping[str, object]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            "refused to load this file: it is a pickle that asks for code beyond plain "
            "tensors, which could run anything. Save the weights with safetensors, or "
            f"torch.save(model.state_dict()). ({str(exc).splitlines()[0][:200]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        raise WeightsError(
            f"damaged torch weights file: {str(exc).splitlines()[0][:200]}"
        ) from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(
            f"the file holds a {type(loaded).__name__}, not a state_dict; save "
            "model.state_dict() rather than the model"
        )
    return loaded


def _unwrap(original: Mapping[str, object]) -> StateDict:
    loaded: Mapping[str, object] = original
    for key in _WRAPPER_KEYS:
        inner = loaded.get(key)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, torch.Tensor) for v in inner.values())
        ):
            loaded = inner
            break
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def check_finite(state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`WeightsError` naming the first tensor with NaN or infinite values."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"tensor {name!r} contains NaN or infinite values")


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, arch: str = "") -> None:
    """Check that ``state`` fits ``model`` exactly, without loading it.

    Raises:
        WeightsError: names the first missing and unexpected keys and mismatching shapes.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} is {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong):
        return
    what = f"these weights do not fit {arch}" if arch else "these weights do not fit the model"
    parts = []
    if wrong:
        parts.append(f"shape mismatch: {'; '.join(wrong[:3])}" + (" ..." if len(wrong) > 3 else ""))
    if missing:
        parts.append(
            f"{len(missing)} missing keys ({', '.join(missing[:3])}"
            + (", ...)" if len(missing) > 3 else ")")
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
            + (", ...)" if len(unexpected) > 3 else ")")
        )
    raise WeightsError(
        f"{what}: {'; '.join(parts)}. Check --arch, --num-classes and --input-shape."
    )


def load_weights(model: nn.Module, source: WeightsSource, *, arch: str = "") -> nn.Module:
    """Load a weights file into ``model`` in place and return the model.

    Raises:
        UnsafeFileError: the file is a pickle with a code payload (not executed).
        WeightsError: unreadable, non-finite values, or not fitting the architecture.
    """
    state = read_state_dict(source)
    fit_state_dict(model, state, arch=arch)
    check_finite(state)
    model.load_state_dict(state, strict=True)
    return model
