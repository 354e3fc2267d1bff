"""The per-module metadata of a state_dict (``_metadata``): kept through safetensors.

``nn.Module.state_dict()`` attaches ``_metadata``, a mapping from each module's path
("" for the root) to a small dict, in practice ``{"version": module._version}``. Modules
read it back in ``_load_from_state_dict`` to understand checkpoints of older versions
of themselves; some refuse a state_dict without it (torchvision's MNASNet raises
``ValueError`` when its version is missing). safetensors stores tensors only, so the
mapping travels as JSON in the file's metadata under :data:`METADATA_KEY`, and is
validated on the way back in: plain ints and short strings only, bounded in size, so
a file can neither smuggle code nor blow up memory.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from models.errors import WeightsError

__all__ = [
    "METADATA_KEY",
    "ModuleMetadata",
    "attach_module_metadata",
    "check_module_metadata",
    "decode_module_metadata",
    "encode_module_metadata",
    "module_metadata_of",
    "own_module_metadata",
]

METADATA_KEY = "module_metadata"
"""The safetensors metadata key holding a state_dict's ``_metadata`` as JSON."""

ModuleMetadata = dict[str, dict[str, int | str]]

# Far above any real network (efficientnet_v2_l: 1,409 modules, 56 kB of JSON).
MAX_JSON_CHARS = 1 << 20
MAX_MODULES = 50_000
MAX_KEYS_PER_MODULE = 16
MAX_NAME_CHARS = 1_000
MAX_VALUE_CHARS = 200
_INT_LIMIT = 1 << 53


def module_metadata_of(state: object) -> ModuleMetadata | None:
    """Return a state_dict's ``_metadata`` as plain dicts, or None if it has none.

    Entries that are not ints or strings are dropped: nothing torch itself writes is
    lost, and whatever else a hook put there could not be stored safely anyway.
    """
    raw = getattr(state, "_metadata", None)
    if not isinstance(raw, Mapping):
        return None
    return {
        str(path): {
            str(k): v
            for k, v in entry.items()
            if isinstance(v, int | str) and not isinstance(v, bool)
        }
        for path, entry in raw.items()
        if isinstance(entry, Mapping)
    }


def encode_module_metadata(metadata: ModuleMetadata) -> str:
    """Return ``metadata`` as compact JSON for a safetensors metadata value.

    Raises:
        WeightsError: more modules or characters than a file may carry.
    """
    check_module_metadata(metadata)
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=False)
    if len(text) > MAX_JSON_CHARS:
        raise WeightsError(
            f"the model's module metadata is {len(text):,} characters of JSON, over the "
            f"limit of {MAX_JSON_CHARS:,}"
        )
    return text


def decode_module_metadata(text: str) -> ModuleMetadata:
    """Parse and validate JSON written by :func:`encode_module_metadata`.

    Raises:
        WeightsError: not JSON, too large, or holding anything but module paths mapped
            to dicts of ints and strings.
    """
    if len(text) > MAX_JSON_CHARS:
        raise WeightsError(
            f"malformed checkpoint metadata: {METADATA_KEY} is {len(text):,} characters, "
            f"over the limit of {MAX_JSON_CHARS:,}"
        )
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"malformed checkpoint metadata: {METADATA_KEY}: {exc}") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        raise WeightsError(
            f"malformed checkpoint metadata: {METADATA_KEY} must map module paths to objects"
        )
    check_module_metadata(loaded)
    return loaded


def attach_module_metadata(
    state: Mapping[str, torch.Tensor], metadata: ModuleMetadata
) -> OrderedDict[str, torch.Tensor]:
    """Return ``state`` as an ordered dict carrying ``metadata`` as ``_metadata``.

    ``nn.Module.load_state_dict`` hands each module ``_metadata[its path]`` as
    ``local_metadata``.
    """
    restored: OrderedDict[str, torch.Tensor] = OrderedDict(state)
    # torch reads this attribute, as state_dict() writes it
    restored._metadata = OrderedDict((path, dict(entry)) for path, entry in metadata.items())  # type: ignore[attr-defined]
    return restored


def own_module_metadata(model: nn.Module) -> ModuleMetadata:
    """Return the ``_metadata`` ``model.state_dict()`` would write (its code's versions)."""
    return module_metadata_of(model.state_dict()) or {}


def check_module_metadata(metadata: Mapping[str, Mapping[str, object]]) -> None:
    """Raise :class:`WeightsError` unless ``metadata`` is small and holds ints and strings only.

    Raises:
        WeightsError: too many modules, over-long names, or values of another type.
    """
    if len(metadata) > MAX_MODULES:
        raise WeightsError(
            f"malformed checkpoint metadata: {METADATA_KEY} names {len(metadata):,} "
            f"modules, over the limit of {MAX_MODULES:,}"
        )
    for path, entry in metadata.items():
        if not isinstance(path, str) or len(path) > MAX_NAME_CHARS:
            raise WeightsError(f"malformed checkpoint metadata: module path {str(path)[:80]!r}")
        if len(entry) > MAX_KEYS_PER_MODULE:
            raise WeightsError(
                f"malformed checkpoint metadata: module {path!r} has {len(entry)} entries"
            )
        for key, value in entry.items():
            if not isinstance(key, str) or len(key) > MAX_VALUE_CHARS:
                raise WeightsError(f"malformed checkpoint metadata: key {str(key)[:80]!r}")
            valid = (
                isinstance(value, int) and not isinstance(value, bool) and abs(value) < _INT_LIMIT
            ) or (isinstance(value, str) and len(value) <= MAX_VALUE_CHARS)
            if not valid:
                raise WeightsError(
                    f"malformed checkpoint metadata: module {path!r} {key!r} must be an int "
                    f"or a short string, not {str(value)[:80]!r}"
                )
