"""Reading weights safely: safetensors, or a state_dict through ``weights_only=True``.

Nothing here ever unpickles arbitrary objects. A torch pickle is opened only with
``torch.load(..., weights_only=True)``, whose restricted unpickler refuses any global
that is not a tensor building block, so a payload that would run code is rejected
before it runs.

The per-module versions a state_dict carries (``_metadata``) come along: from a torch
pickle as saved, from safetensors through the file's metadata (see
:mod:`models.io._module_metadata`); a file without any is loaded with the versions of
the code that built the model.
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
from models.io._module_metadata import (
    METADATA_KEY,
    ModuleMetadata,
    attach_module_metadata,
    check_module_metadata,
    decode_module_metadata,
    module_metadata_of,
    own_module_metadata,
)

__all__ = [
    "StateDict",
    "WeightsSource",
    "check_finite",
    "fit_state_dict",
    "load_checked",
    "load_weights",
    "read_state_dict",
    "read_weights",
    "safetensors_metadata",
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
    return read_weights(source)[0]


def read_weights(source: WeightsSource) -> tuple[StateDict, ModuleMetadata | None]:
    """Return a weights file's tensors and the per-module metadata stored with them.

    As :func:`read_state_dict`, plus the state_dict's ``_metadata`` (module path →
    ``{"version": n}``): a torch pickle's as saved, a safetensors file's from its
    ``module_metadata`` entry, or None when the file has none.

    Raises:
        UnsafeFileError: a pickle that asks for anything but tensors (it is not run).
        WeightsError: not a weights file, unreadable, holding no tensors, or with
            malformed module metadata.
    """
    data = _read_bytes(source)
    kind = weights_format(data)
    loaded: Mapping[str, object]
    metadata: ModuleMetadata | None = None
    if kind == "safetensors":
        try:
            loaded = load_safetensors_bytes(data)
            text = safetensors_metadata(data).get(METADATA_KEY)
        except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
            raise WeightsError(f"damaged safetensors file: {exc}") from None
        if text is not None:
            metadata = decode_module_metadata(text)
    elif kind in ("torch-zip", "torch-legacy"):
        loaded = _torch_load(data)
    else:
        raise WeightsError(
            "not a weights file: expected safetensors or a torch.save()d state_dict "
            "(.pt/.pth); got something else (text? an archive?)"
        )
    tensors, pickled = _unwrap(loaded)
    if not tensors:
        raise WeightsError("the weights file holds no tensors")
    if kind != "safetensors" and pickled is not None:
        check_module_metadata(pickled)
        metadata = pickled
    return tensors, metadata


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """Return the ``__metadata__`` strings of safetensors bytes (empty if none).

    Raises:
        ValueError: the bytes do not start with a safetensors header.
    """
    if len(data) < 8:
        raise ValueError("file too short")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8 : 8 + header_len])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a JSON object")
    return {str(k): str(v) for k, v in meta.items()}


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


def _unwrap(original: Mapping[str, object]) -> tuple[StateDict, ModuleMetadata | None]:
    """Return the tensors of a (possibly wrapped) state_dict and its ``_metadata``."""
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
    metadata = module_metadata_of(loaded)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
        if metadata is not None:  # the module paths lose the prefix as the names did
            metadata = {
                path[len("module.") :] if path != "module" else "": entry
                for path, entry in metadata.items()
                if path == "module" or path.startswith("module.")
            }
    return tensors, metadata


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


def load_checked(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    metadata: ModuleMetadata | None,
    *,
    arch: str = "",
) -> None:
    """Load ``state`` into ``model`` strictly, after checking that it fits and is finite.

    Each module gets its entry of ``metadata`` (or, when the file carried none, the
    versions ``model``'s own code writes) as the ``local_metadata`` its
    ``_load_from_state_dict`` reads.

    Raises:
        WeightsError: the tensors do not fit, hold NaN or infinity, or a module refused
            them.
    """
    fit_state_dict(model, state, arch=arch)
    check_finite(state)
    versions = own_module_metadata(model) if metadata is None else metadata
    try:
        model.load_state_dict(attach_module_metadata(state, versions), strict=True)
    except Exception as exc:  # a module's own loading hook may raise anything
        what = arch or "the model"
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise WeightsError(
            f"{what} refused these weights while loading them: {type(exc).__name__}"
            + (f": {detail}" if detail else "")
        ) from exc


def load_weights(model: nn.Module, source: WeightsSource, *, arch: str = "") -> nn.Module:
    """Load a weights file into ``model`` in place and return the model.

    Raises:
        UnsafeFileError: the file is a pickle with a code payload (not executed).
        WeightsError: unreadable, non-finite values, or not fitting the architecture.
    """
    state, metadata = read_weights(source)
    load_checked(model, state, metadata, arch=arch)
    return model
