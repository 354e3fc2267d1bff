"""Unstructured magnitude pruning of LSTM/GRU weights along Zhu & Gupta's AGP curve.

Where :mod:`models.prune._recurrent` removes whole hidden units, this zeroes single
weights of the input-to-hidden and hidden-to-hidden matrices (``weight_ih_l{k}``,
``weight_hh_l{k}``), the smallest in magnitude of each matrix first, following automated
gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the sparsity rises
along a cubic from ``initial`` to ``final`` while the model trains, so the remaining
weights adapt. The model keeps its dense shapes; removed weights are held at zero.

A hybrid sequence's ``weight`` steps (:class:`models.prune.PruningStep`) use the same
masks: at once (:func:`magnitude_masks`), or along the curve during the fine-tune that
follows them (:class:`AgpRecurrentMasking`); :func:`keep_recurrent_masked` holds the
zeros of a model while it trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from models.errors import ModelsError

__all__ = [
    "AgpRecurrentMasking",
    "RecurrentWeightMasks",
    "agp_sparsity",
    "has_recurrent_weights",
    "keep_recurrent_masked",
    "magnitude_masks",
    "recurrent_weights",
    "zeroed_recurrent_masks",
]

_RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
_WEIGHT_PREFIXES = ("weight_ih_l", "weight_hh_l")


def agp_sparsity(
    step: int, end_step: int, final: float, *, initial: float = 0.0, start_step: int = 0
) -> float:
    """Return the sparsity AGP asks for after ``step`` steps.

    ``s = final + (initial - final) * (1 - (step - start_step) / (end_step - start_step))**3``
    between ``start_step`` and ``end_step``; ``initial`` before, ``final`` after.

    Args:
        step: steps done.
        end_step: the step at which the sparsity reaches ``final``.
        final: the sparsity to end at, in [0, 1).
        initial: the sparsity at ``start_step``, in [0, final].
        start_step: the step pruning starts at.

    Returns:
        The sparsity, a fraction of weights to be zero.

    Raises:
        ModelsError: sparsities out of range or ``end_step`` not after ``start_step``.
    """
    if not 0.0 <= initial <= final < 1.0:
        raise ModelsError(f"AGP needs 0 <= initial <= final < 1, got {initial} and {final}")
    if end_step <= start_step:
        raise ModelsError(f"AGP needs end_step > start_step, got {end_step} and {start_step}")
    t = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return final + (initial - final) * (1.0 - t) ** 3


@dataclass(frozen=True)
class RecurrentWeightMasks:
    """Which recurrent weights are kept: parameter path → boolean mask of its shape."""

    masks: Mapping[str, torch.Tensor]

    def sparsity(self) -> float:
        """Return the fraction of masked weights that are removed (0 with no masks)."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    def apply(self, model: nn.Module) -> None:
        """Zero ``model``'s removed weights in place.

        Raises:
            ModelsError: a masked parameter is missing or has another shape.
        """
        with torch.no_grad():
            for path, mask in self.masks.items():
                try:
                    weight = model.get_parameter(path)
                except AttributeError:
                    raise ModelsError(f"the model has no parameter {path!r} to mask") from None
                if weight.shape != mask.shape:
                    raise ModelsError(
                        f"mask of {path!r} is {tuple(mask.shape)}, the weight {tuple(weight.shape)}"
                    )
                weight.mul_(mask.to(weight.device, weight.dtype))


def recurrent_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Return every ``weight_ih_l{k}``/``weight_hh_l{k}`` of the model's ``nn.LSTM``/
    ``nn.GRU``/``nn.RNN`` layers (bias and projection tensors excluded), by parameter path."""
    found: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if not isinstance(module, _RNN_TYPES):
            continue
        for tensor_name, weight in module.named_parameters(recurse=False):
            if tensor_name.startswith(_WEIGHT_PREFIXES):
                found[f"{name}.{tensor_name}" if name else tensor_name] = weight
    return found


def has_recurrent_weights(model: nn.Module) -> bool:
    """Return whether ``model`` has an LSTM/GRU/RNN weight matrix a weight step can prune."""
    return bool(recurrent_weights(model))


def zeroed_recurrent_masks(model: nn.Module) -> RecurrentWeightMasks:
    """Return masks keeping exactly the non-zero recurrent weights of ``model`` (what a
    weight step, or an earlier fine-tune that held its masks, left as zeros)."""
    return RecurrentWeightMasks(
        {path: weight.detach().ne(0).cpu() for path, weight in recurrent_weights(model).items()}
    )


@contextlib.contextmanager
def keep_recurrent_masked(model: nn.Module, masks: RecurrentWeightMasks) -> Iterator[nn.Module]:
    """Keep the removed recurrent weights of ``model`` at zero while the block trains it.

    The masks are applied in place before every forward pass of each recurrent layer (a
    forward pre-hook: the optimizer's update of a removed weight is undone before it is
    ever used) and once more on leaving, so the model leaves with exactly the masked
    zeros and no hook. In-place zeroing keeps each parameter's storage, so cuDNN's flat
    weights stay valid (``torch.nn.utils.prune``'s re-parametrization would replace them).

    Raises:
        ModelsError: a mask names no parameter of the model or does not fit it.
    """
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for path, mask in masks.masks.items():
        module_name, _, tensor_name = path.rpartition(".")
        by_module.setdefault(module_name, {})[tensor_name] = mask
    masks.apply(model)  # checks every path and shape
    handles = []
    for module_name, tensors in by_module.items():
        module = model.get_submodule(module_name)
        local = RecurrentWeightMasks(tensors)
        handles.append(module.register_forward_pre_hook(lambda m, _args, k=local: k.apply(m)))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        masks.apply(model)


def magnitude_masks(model: nn.Module, sparsity: float) -> RecurrentWeightMasks:
    """Return masks removing the smallest ``sparsity`` share of each recurrent weight matrix.

    Every ``weight_ih_l{k}`` and ``weight_hh_l{k}`` of every ``nn.LSTM``/``nn.GRU``/
    ``nn.RNN`` gets its own mask (layer by layer, so no matrix is emptied); biases and
    other layers are untouched. Ties are broken by position, so the count is exact.

    Args:
        model: the model whose weights are ranked (as they are now).
        sparsity: fraction of each matrix to remove, in [0, 1).

    Returns:
        The masks.

    Raises:
        ModelsError: ``sparsity`` out of range, or the model has no recurrent layer.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ModelsError(f"sparsity must be in [0, 1), got {sparsity}")
    masks: dict[str, torch.Tensor] = {}
    for path, weight in recurrent_weights(model).items():
        flat = weight.detach().abs().flatten().cpu()
        removed = int(round(sparsity * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, stable=True)[:removed]] = False
        masks[path] = keep.view(weight.shape)
    if not masks:
        raise ModelsError("the model has no LSTM, GRU or RNN layer to sparsify")
    return RecurrentWeightMasks(masks)


class _Progress(Protocol):
    @property
    def step(self) -> int: ...


class AgpRecurrentMasking:
    """A fine-tune step callback that sparsifies recurrent weights along AGP.

    Pass it as ``on_step`` to :func:`models.train.fine_tune`: every ``every`` steps (and
    at ``end_step``) it recomputes the magnitude masks at the sparsity of the curve, and
    after every step it zeroes the removed weights again (the optimizer's momentum would
    otherwise revive them). Weights once removed stay removed: they are zero, the
    smallest magnitudes; weights already zero when it starts (an earlier pruning's) are
    held from the start and count towards the curve's ``initial`` sparsity, so every
    matrix ends with at least ``final`` of its weights zero. Not thread safe; one
    instance per fine-tune.

    Args:
        model: the model being trained (modified in place).
        final: the sparsity of each recurrent weight matrix at ``end_step``.
        end_step: the step at which ``final`` is reached.
        every: steps between mask updates.
        start_step: the step pruning starts at.
        initial: the sparsity the curve starts from; None: the share of the model's
            recurrent weights that are zero now (at most ``final``).

    Raises:
        ModelsError: sparsities out of range, ``end_step`` not after ``start_step``,
            ``every`` < 1, or no recurrent layer.
    """

    def __init__(
        self,
        model: nn.Module,
        final: float,
        end_step: int,
        *,
        every: int = 1,
        start_step: int = 0,
        initial: float | None = None,
    ) -> None:
        held = zeroed_recurrent_masks(model)
        if not held.masks:
            raise ModelsError("the model has no LSTM, GRU or RNN layer to sparsify")
        if initial is None:
            initial = min(held.sparsity(), final)
        agp_sparsity(start_step, end_step, final, initial=initial, start_step=start_step)
        if every < 1:
            raise ModelsError(f"every must be at least 1, got {every}")
        self.model = model
        self.final = final
        self.initial = initial
        self.end_step = end_step
        self.every = every
        self.start_step = start_step
        self._held = held
        self.masks = held

    def __call__(self, progress: _Progress) -> None:
        step = progress.step
        due = (step - self.start_step) % self.every == 0 or step == self.end_step
        if step >= self.start_step and due and step <= self.end_step:
            target = agp_sparsity(
                step, self.end_step, self.final, initial=self.initial, start_step=self.start_step
            )
            fresh = magnitude_masks(self.model, target).masks
            self.masks = RecurrentWeightMasks(
                {path: mask & self._held.masks[path] for path, mask in fresh.items()}
            )
        self.masks.apply(self.model)
