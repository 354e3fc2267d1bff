"""Kernel granularity: which k×k kernels of each filter go, and keeping them gone.

A *kernel* is the slice ``weight[o, i]`` of a convolution: what filter ``o`` applies to
its input channel ``i``. Removing kernels leaves the layer's shape as it is (a
structured-sparse convolution); dense runtimes still multiply the zeros, so such a cut
saves parameters to store but no time unless a whole input channel goes (see
:mod:`models.prune._sequence`, which turns such columns into channel cuts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from models.errors import ModelsError
from models.names import KERNEL_CRITERION_NAMES

__all__ = [
    "KernelMasks",
    "kernel_layers",
    "kernel_masks",
    "keep_kernels_masked",
    "score_kernels",
    "zero_kernels",
    "zeroed_kernel_masks",
]

_SIMILARITY_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class KernelMasks(Mapping[str, torch.Tensor]):
    """Which kernels each convolution keeps: module path → bool tensor (out, in/groups).

    ``masks[name][o, i]`` is False when filter ``o`` of layer ``name`` no longer reads
    input channel ``i`` of its group. Layers that keep every kernel are not listed, so
    an empty mapping is a dense model. The tensors are copies on the CPU; the record never
    changes after it is made.
    """

    _masks: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cleaned: dict[str, torch.Tensor] = {}
        for name, mask in self._masks.items():
            if mask.dim() != 2:
                raise ModelsError(
                    f"kernel mask of {name!r} must be 2-D (out, in), not {mask.dim()}"
                )
            mask = mask.detach().to("cpu", torch.bool).clone()
            if not bool(mask.all()):
                cleaned[name] = mask
        object.__setattr__(self, "_masks", MappingProxyType(cleaned))

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name].clone()

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelMasks):
            return NotImplemented
        return self._masks.keys() == other._masks.keys() and all(
            torch.equal(mask, other._masks[name]) for name, mask in self._masks.items()
        )

    __hash__ = None  # type: ignore[assignment]  # equal masks need not hash alike

    def removed(self) -> int:
        """Return how many kernels are removed over all layers."""
        return sum(int((~m).sum()) for m in self._masks.values())

    def kept_share(self, name: str) -> float:
        """Return the share of layer ``name``'s kernels that are kept (1.0 if unlisted)."""
        mask = self._masks.get(name)
        return 1.0 if mask is None else float(mask.float().mean())


def _conv_kernels(module: nn.Module) -> int:
    """Return the kernels per filter of a convolution that kernel pruning may thin, or 0."""
    if not isinstance(module, nn.modules.conv._ConvNd) or module.transposed:
        return 0
    return int(module.weight.shape[1])


def kernel_layers(model: nn.Module, ignored_layers: Iterable[str] = ()) -> list[str]:
    """Return the module paths of the convolutions whose filters read more than one
    input channel (depthwise layers have one kernel per filter and are left whole).

    Args:
        model: the network.
        ignored_layers: module paths left whole.
    """
    skip = set(ignored_layers)
    return [
        name
        for name, module in model.named_modules()
        if name not in skip and _conv_kernels(module) > 1
    ]


def zeroed_kernel_masks(model: nn.Module) -> KernelMasks:
    """Return the masks of the kernels ``model`` holds as zeros: a kernel counts as
    removed when every weight in it is exactly zero.

    That is what :func:`zero_kernels` and :func:`keep_kernels_masked` leave, and trained
    weights are never all exactly zero by chance, so the masks of a kernel-pruned model
    travel with its weights (a plain state dict, a rung checkpoint) and are read back here.
    Layers that :func:`kernel_layers` leaves whole are not listed.
    """
    masks: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for name in kernel_layers(model):
        weight = modules[name].weight
        assert isinstance(weight, torch.Tensor)
        masks[name] = weight.detach().flatten(2).ne(0).any(dim=2).cpu()
    return KernelMasks(masks)


def score_kernels(
    weight: torch.Tensor,
    criterion: str = "l1",
    kept: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return one score per kernel of a convolution weight (higher = keep).

    ``l1``/``l2``: the kernel's norm (quantitative). ``fpgm``: the sum of its distances to
    the other kept kernels of the same filter, divided by that filter's mean, so a kernel
    close to its siblings is redundant whatever the filter's scale (similarity).
    ``random``: uniform scores from ``generator``.

    Args:
        weight: (out, in/groups, *kernel) convolution weight.
        criterion: one of :data:`models.names.KERNEL_CRITERION_NAMES`.
        kept: bool (out, in/groups): kernels still kept; removed ones are not others.
        generator: seeds ``random``.

    Returns:
        A float tensor (out, in/groups) on the CPU.

    Raises:
        ModelsError: an unknown criterion.
    """
    w = weight.detach().float().cpu().flatten(2)
    if kept is None:
        kept = torch.ones(w.shape[:2], dtype=torch.bool)
    if criterion == "l1":
        return w.abs().sum(2)
    if criterion == "l2":
        return w.pow(2).sum(2).sqrt()
    if criterion == "fpgm":
        distances = torch.cdist(w, w) * kept[:, None, :].float()
        total = distances.sum(2)
        count = kept.float().sum(1, keepdim=True).clamp(min=1)
        mean = (total * kept.float()).sum(1, keepdim=True) / count
        return total / (mean + _SIMILARITY_EPS)
    if criterion == "random":
        return torch.rand(w.shape[:2], generator=generator)
    raise ModelsError(
        f"criterion {criterion!r} cannot score kernels; choose one of "
        f"{', '.join(KERNEL_CRITERION_NAMES)}"
    )


def _select(scores: torch.Tensor, kept: torch.Tensor, amount: float) -> torch.Tensor:
    """Return ``kept`` less the ``round(amount × kept)`` lowest-scoring kernels, keeping
    each filter's best kernel whatever its rank."""
    n_kept = int(kept.sum())
    alive = kept.any(1)
    remove = min(round(amount * n_kept), n_kept - int(alive.sum()))
    if remove <= 0:
        return kept.clone()
    masked = scores.masked_fill(~kept, float("-inf"))
    best = masked.argmax(1)
    candidates = kept.clone()
    candidates[alive.nonzero().flatten(), best[alive]] = False
    ranked = scores.masked_fill(~candidates, float("inf")).flatten()
    order = torch.sort(ranked, stable=True).indices[:remove]
    mask = kept.clone().flatten()
    mask[order] = False
    return mask.view_as(kept)


def kernel_masks(
    model: nn.Module,
    amount: float,
    criterion: str = "l1",
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    ignored_layers: Iterable[str] = (),
    seed: int = 0,
) -> KernelMasks:
    """Return the masks after removing the share ``amount`` of each layer's kept kernels.

    Every convolution of :func:`kernel_layers` loses ``round(amount × kept)`` of the
    kernels it still keeps, the lowest-scoring under ``criterion`` first, but each
    filter keeps at least one kernel (its best), so a very high ``amount`` removes less.

    Args:
        model: the network (not modified).
        amount: share of the kept kernels to remove, 0 <= amount < 1.
        criterion: one of :data:`models.names.KERNEL_CRITERION_NAMES`.
        masks: kernels already removed (from an earlier step); they stay removed.
        ignored_layers: module paths left whole.
        seed: seeds the ``random`` criterion.

    Returns:
        The new :class:`KernelMasks`, earlier masks included.

    Raises:
        ModelsError: ``amount`` out of range, an unknown criterion, or a mask whose shape
            does not fit its layer.
    """
    if not 0.0 <= amount < 1.0:
        raise ModelsError(f"a kernel step's amount must be in [0, 1), got {amount}")
    earlier = dict(masks or {})
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, torch.Tensor] = {}
    for name in kernel_layers(model, ignored_layers):
        weight = modules[name].weight
        assert isinstance(weight, torch.Tensor)
        shape = tuple(weight.shape[:2])
        kept = earlier.pop(name, torch.ones(shape, dtype=torch.bool)).to(torch.bool)
        if tuple(kept.shape) != shape:
            raise ModelsError(f"kernel mask of {name!r} is {tuple(kept.shape)}, layer is {shape}")
        scores = score_kernels(weight, criterion, kept, generator=generator)
        result[name] = _select(scores, kept, amount)
    result.update(earlier)  # masks of layers not thinned now (ignored) stay as they were
    return KernelMasks(result)


def _check_layer(modules: Mapping[str, nn.Module], name: str, mask: torch.Tensor) -> nn.Module:
    module = modules.get(name)
    if module is None or not isinstance(module, nn.modules.conv._ConvNd):
        raise ModelsError(f"kernel mask for {name!r}, which is not a convolution of this model")
    if tuple(module.weight.shape[:2]) != tuple(mask.shape):
        raise ModelsError(
            f"kernel mask of {name!r} is {tuple(mask.shape)}, the layer's filters are "
            f"{tuple(module.weight.shape[:2])}"
        )
    return module


def _full_mask(module: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    view = mask.to(weight.device, weight.dtype).view(*mask.shape, *([1] * (weight.dim() - 2)))
    return view.expand_as(weight).clone()


def zero_kernels(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Set the removed kernels of ``model`` to zero, in place, and return it.

    Raises:
        ModelsError: a mask names no convolution of the model or does not fit it.
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            module = _check_layer(modules, name, mask)
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            weight.mul_(_full_mask(module, mask))
    return model


@contextlib.contextmanager
def keep_kernels_masked(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Keep the removed kernels of ``model`` at zero while the block trains it.

    Each masked layer's weight is re-parametrized with
    :func:`torch.nn.utils.prune.custom_from_mask` (weight = weight_orig × mask, so
    gradients never revive a kernel); on leaving, the product is made the plain weight
    again, so the model saves, prunes and exports as an ordinary one.

    Raises:
        ModelsError: a mask names no convolution of the model or does not fit it.
    """
    modules = dict(model.named_modules())
    attached = []
    for name, mask in masks.items():
        module = _check_layer(modules, name, mask)
        torch_prune.custom_from_mask(module, "weight", _full_mask(module, mask))
        attached.append(module)
    try:
        yield model
    finally:
        for module in attached:
            torch_prune.remove(module, "weight")
