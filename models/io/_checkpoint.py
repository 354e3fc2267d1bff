"""Pruned checkpoints: safetensors whose metadata says how to rebuild the structure.

Beside the recipe (arch, classes, input shape, plan) the metadata keeps the state_dict's
per-module versions (``_metadata``), which safetensors would otherwise drop and which
some modules' loading code requires (torchvision's MNASNet refuses to load without).
A kernel-pruned model also keeps its kernel masks there, and its masked layers store only
the kept kernels (see :mod:`models.io._kernel_masks`); such checkpoints are version 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from models.errors import ModelsError, WeightsError
from models.io._kernel_masks import (
    KERNEL_MASKS_KEY,
    decode_kernel_masks,
    encode_kernel_masks,
    pack_kernel_weights,
    unpack_kernel_weights,
)
from models.io._module_metadata import METADATA_KEY, encode_module_metadata, module_metadata_of
from models.io._weights import load_checked, read_state_dict, read_weights, safetensors_metadata
from models.prune import KernelMasks, Plan, apply_plan, build_pruning_graph
from models.zoo import build_model, normalize_shape

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointInfo",
    "checkpoint_bytes",
    "load_pruned",
    "read_checkpoint_info",
    "read_checkpoint_state",
    "save_pruned",
]

CHECKPOINT_FORMAT = "inferprune.pruned"
CHECKPOINT_VERSION = "1"
SPARSE_CHECKPOINT_VERSION = "2"
"""The version of checkpoints with kernel masks (readers of version 1 refuse them)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's metadata says about the network it holds.

    Attributes:
        arch: zoo architecture name.
        num_classes: classifier outputs.
        input_shape: (C, H, W) the model expects, or (T, F) for a sequence model.
        plan: channels kept per group (empty for an unpruned model).
        round_to: the channel multiple the plan was made with.
        normalization: ``{"mean": [...], "std": [...]}`` the inputs must be normalized with,
            if the training data set had one.
        extra: any other string metadata (for example the job and trial that made it).
        kernel_masks: the kernels removed after the plan (empty for a dense model).
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    plan: Plan
    round_to: int = 8
    normalization: dict[str, list[float]] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    kernel_masks: KernelMasks = field(default_factory=KernelMasks)

    def to_metadata(self) -> dict[str, str]:
        """Return the safetensors metadata (all values are strings)."""
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": SPARSE_CHECKPOINT_VERSION if self.kernel_masks else CHECKPOINT_VERSION,
            "arch": self.arch,
            "num_classes": str(self.num_classes),
            "input_shape": json.dumps(list(self.input_shape)),
            "plan": self.plan.to_json(),
            "round_to": str(self.round_to),
            "torch_version": torch.__version__.split("+")[0],
        }
        if self.normalization is not None:
            meta["normalization"] = json.dumps(self.normalization)
        if self.kernel_masks:
            meta[KERNEL_MASKS_KEY] = encode_kernel_masks(self.kernel_masks)
        for key, value in self.extra.items():
            meta.setdefault(key, value)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> CheckpointInfo:
        """Parse metadata written by :meth:`to_metadata`.

        Raises:
            WeightsError: metadata missing or malformed.
        """
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise WeightsError(
                "this safetensors file has no inferprune metadata (arch, plan); load it "
                "with --weights and --arch instead of --pruned"
            )
        if meta.get("version") not in (CHECKPOINT_VERSION, SPARSE_CHECKPOINT_VERSION):
            raise WeightsError(f"checkpoint version {meta.get('version')!r} is not supported")
        try:
            known = {
                "format",
                "version",
                "arch",
                "num_classes",
                "input_shape",
                "plan",
                "round_to",
                "normalization",
                "torch_version",
                METADATA_KEY,
                KERNEL_MASKS_KEY,
            }
            return cls(
                arch=meta["arch"],
                num_classes=int(meta["num_classes"]),
                input_shape=normalize_shape(json.loads(meta["input_shape"])),
                plan=Plan.from_json(meta["plan"]),
                round_to=int(meta.get("round_to", "8")),
                normalization=json.loads(meta["normalization"])
                if "normalization" in meta
                else None,
                extra={k: v for k, v in meta.items() if k not in known},
                kernel_masks=decode_kernel_masks(meta[KERNEL_MASKS_KEY])
                if KERNEL_MASKS_KEY in meta
                else KernelMasks(),
            )
        except (KeyError, ValueError, ModelsError) as exc:
            raise WeightsError(f"malformed checkpoint metadata: {exc}") from None


def checkpoint_bytes(model: nn.Module, info: CheckpointInfo) -> bytes:
    """Return ``model``'s weights as safetensors bytes carrying ``info`` as metadata.

    The metadata also holds the state_dict's per-module versions, as JSON under
    ``module_metadata``, for :func:`load_pruned` to hand back to each module. Layers
    with kernel masks in ``info`` store their kept kernels only.

    Raises:
        WeightsError: the module metadata is over the size a checkpoint may carry, or a
            kernel mask does not fit the model.
    """
    full = model.state_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in full.items()}
    state = pack_kernel_weights(state, info.kernel_masks)
    meta = info.to_metadata()
    versions = module_metadata_of(full)
    if versions is not None:
        meta[METADATA_KEY] = encode_module_metadata(versions)
    return save_safetensors_bytes(state, metadata=meta)


def save_pruned(model: nn.Module, path: str | os.PathLike[str], info: CheckpointInfo) -> Path:
    """Write ``model`` and its rebuild recipe ``info`` to ``path`` as safetensors.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(checkpoint_bytes(model, info))
    tmp.replace(target)
    return target


def read_checkpoint_info(source: str | os.PathLike[str] | bytes) -> CheckpointInfo:
    """Return the :class:`CheckpointInfo` of a pruned checkpoint without loading tensors.

    Raises:
        WeightsError: not a safetensors file, or no inferprune metadata.
    """
    try:
        if isinstance(source, bytes):
            meta = safetensors_metadata(source)
        else:
            with safe_open(str(source), framework="pt") as handle:
                meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"not a safetensors checkpoint: {exc}") from None
    return CheckpointInfo.from_metadata(meta)


def read_checkpoint_state(source: str | os.PathLike[str] | bytes) -> dict[str, torch.Tensor]:
    """Return a pruned checkpoint's tensors as its model holds them: masked layers'
    kept kernels back in their places, zeros in the removed ones (a dense checkpoint's
    tensors as stored).

    Raises:
        WeightsError: unreadable, no metadata, or packed weights that do not fit their
            masks.
    """
    info = read_checkpoint_info(source)
    return unpack_kernel_weights(read_state_dict(source), info.kernel_masks)


def load_pruned(source: str | os.PathLike[str] | bytes) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the exact pruned network stored in a checkpoint and load its weights.

    The architecture is built fresh, the stored plan is replayed (which channels were
    kept does not matter: the weights overwrite them), and the tensors are loaded
    strictly, each module given the version metadata it was saved with (a checkpoint
    written before versions were stored gets those of the code now running). Kept
    kernels go back to their places in masked layers, zeros to the removed ones.

    Returns:
        ``(model, info)``: the model in eval mode and the checkpoint's metadata.

    Raises:
        UnknownArchitectureError: the checkpoint names an architecture not in the zoo.
        WeightsError: unreadable, no metadata, a plan that cannot be replayed, or tensors
            that do not fit (or are refused by) the rebuilt model; the message names the
            architecture and the step that failed.
    """
    info = read_checkpoint_info(source)
    recipe = f"{info.arch} with the stored plan"
    model = _rebuild(info, recipe)
    state, versions = read_weights(source)
    state = unpack_kernel_weights(state, info.kernel_masks)
    load_checked(model, state, versions, arch=recipe)
    return model.eval(), info


def _rebuild(info: CheckpointInfo, recipe: str) -> nn.Module:
    """Return the architecture of ``info`` with its plan applied (weights still random)."""
    try:
        model = build_model(info.arch, info.num_classes, info.input_shape)
    except ModelsError:
        raise
    except Exception as exc:  # torchvision's builders raise what they like
        raise WeightsError(
            f"cannot build {info.arch} ({info.num_classes} classes, input "
            f"{'x'.join(map(str, info.input_shape))}) for this checkpoint: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not any(True for _ in info.plan.items()):
        return model
    try:
        graph = build_pruning_graph(
            model,
            info.input_shape,
            round_to=info.round_to,
            find_blocks=any(width == 0 for width in info.plan.values()),  # only blocks go to 0
        )
        # replay the plan keeping the first channels: the loaded tensors replace them all
        first = {g.name: torch.arange(g.channels, 0, -1, dtype=torch.float32) for g in graph.groups}
        return apply_plan(model, info.plan, input_shape=info.input_shape, graph=graph, scores=first)
    except Exception as exc:  # Torch-Pruning's failures are not ours to type
        reason = str(exc) if isinstance(exc, ModelsError) else f"{type(exc).__name__}: {exc}"
        raise WeightsError(
            f"cannot replay the plan of this checkpoint on {info.arch}: {reason}"
        ) from exc
