"""Kernel masks in a checkpoint: packed bits in the metadata, only kept kernels stored.

A kernel-pruned layer's weight is stored as its kept kernels only, shape
``(kept, *kernel)``, in the order of its mask's true entries; the masks travel in the
safetensors metadata under :data:`KERNEL_MASKS_KEY` as JSON ``{layer: [out, in,
base64 of the row-major mask packed eight bits a byte]}``. Decoding is bounded and
checked, so a file can neither blow up memory nor load weights into the wrong places.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

import numpy as np
import torch

from models.errors import WeightsError
from models.prune import KernelMasks

__all__ = [
    "KERNEL_MASKS_KEY",
    "decode_kernel_masks",
    "encode_kernel_masks",
    "pack_kernel_weights",
    "unpack_kernel_weights",
]

KERNEL_MASKS_KEY = "kernel_masks"
"""The safetensors metadata key holding a checkpoint's kernel masks."""

MAX_JSON_CHARS = 64 << 20
_MAX_SIDE = 1 << 20


def _weight_key(layer: str) -> str:
    return f"{layer}.weight"


def encode_kernel_masks(masks: KernelMasks) -> str:
    """Return ``masks`` as compact JSON for a safetensors metadata value."""
    data = {}
    for name, mask in masks.items():
        bits = np.packbits(mask.numpy().astype(np.uint8).ravel()).tobytes()
        data[name] = [int(mask.shape[0]), int(mask.shape[1]), base64.b64encode(bits).decode()]
    return json.dumps(data, separators=(",", ":"))


def decode_kernel_masks(text: str) -> KernelMasks:
    """Parse masks written by :func:`encode_kernel_masks`.

    Raises:
        WeightsError: not that JSON, too large, or bits that do not fit their shape.
    """
    if len(text) > MAX_JSON_CHARS:
        raise WeightsError(f"malformed checkpoint metadata: {KERNEL_MASKS_KEY} is too large")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"malformed checkpoint metadata: {KERNEL_MASKS_KEY}: {exc}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"malformed checkpoint metadata: {KERNEL_MASKS_KEY} must be an object")
    masks = {}
    for name, entry in data.items():
        valid = (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(v, int) and 0 < v <= _MAX_SIDE for v in entry[:2])
            and isinstance(entry[2], str)
        )
        if not valid:
            raise WeightsError(f"malformed checkpoint metadata: kernel mask of {name!r}")
        out, inp, encoded = entry
        try:
            bits = np.frombuffer(base64.b64decode(encoded, validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError):
            raise WeightsError(f"malformed checkpoint metadata: kernel mask of {name!r}") from None
        if len(bits) != -(-out * inp // 8):
            raise WeightsError(
                f"malformed checkpoint metadata: kernel mask of {name!r} has {len(bits)} "
                f"bytes for {out}x{inp} kernels"
            )
        flat = np.unpackbits(bits)[: out * inp].astype(bool)
        masks[name] = torch.from_numpy(flat.reshape(out, inp).copy())
    return KernelMasks(masks)


def pack_kernel_weights(
    state: Mapping[str, torch.Tensor], masks: KernelMasks
) -> dict[str, torch.Tensor]:
    """Return ``state`` with each masked layer's weight reduced to its kept kernels.

    Raises:
        WeightsError: a masked layer's weight is missing or does not fit its mask.
    """
    packed = dict(state)
    for name, mask in masks.items():
        key = _weight_key(name)
        weight = packed.get(key)
        if weight is None or tuple(weight.shape[:2]) != tuple(mask.shape):
            raise WeightsError(f"kernel mask of {name!r} does not fit the model's weights")
        packed[key] = weight[mask].contiguous()
    return packed


def unpack_kernel_weights(
    state: Mapping[str, torch.Tensor], masks: KernelMasks
) -> dict[str, torch.Tensor]:
    """Return ``state`` with each masked layer's kept kernels put back, zeros elsewhere.

    Raises:
        WeightsError: a masked layer's weight is missing or holds another number of
            kernels than its mask keeps.
    """
    full = dict(state)
    for name, mask in masks.items():
        key = _weight_key(name)
        kept = full.get(key)
        count = int(mask.sum())
        if kept is None or kept.dim() < 1 or kept.shape[0] != count:
            raise WeightsError(
                f"checkpoint weight {key!r} does not hold the {count} kernels its mask keeps"
            )
        weight = kept.new_zeros((*mask.shape, *kept.shape[1:]))
        weight[mask] = kept
        full[key] = weight
    return full
