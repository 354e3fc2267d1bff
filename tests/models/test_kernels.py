"""Kernel granularity: which kernels go, that they stay gone, and what that saves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.cost import count_macs, count_params, measure_sparse_cost
from models.data._split import TensorSplit
from models.errors import ModelsError
from models.prune import KernelMasks, keep_kernels_masked, kernel_masks, zero_kernels
from models.train import fine_tune


def _kernel_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {
        n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1
    }


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "random"])
@pytest.mark.parametrize("amount", [0.3, 0.6])
def test_each_layer_loses_the_requested_share_and_every_filter_keeps_a_kernel(
    tiny: nn.Module, criterion: str, amount: float
) -> None:
    masks = kernel_masks(tiny, amount, criterion)

    layers = _kernel_layers(tiny)
    assert set(masks) == set(layers)  # the stem reads 3 channels: thinned too
    for name, conv in layers.items():
        mask = masks[name]
        total = conv.out_channels * conv.in_channels
        assert mask.shape == (conv.out_channels, conv.in_channels)
        assert int((~mask).sum()) == round(amount * total)
        assert bool(mask.any(1).all())


def test_an_amount_near_one_leaves_exactly_one_kernel_per_filter(tiny: nn.Module) -> None:
    masks = kernel_masks(tiny, 0.99, "l1")

    for name in _kernel_layers(tiny):
        assert masks[name].sum(1).tolist() == [1] * masks[name].shape[0]


def test_l1_removes_the_weakest_kernels_of_the_layer_but_each_filters_best() -> None:
    conv = nn.Conv2d(4, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1.0, 9.0).view(2, 4, 1, 1).expand(2, 4, 3, 3))

    mask = kernel_masks(nn.Sequential(conv), 0.5, "l1")["0"]

    # half of 8: the first filter's three weakest, then the layer's next weakest (5),
    # since the first filter's best (4) is reserved
    assert mask.tolist() == [[False, False, False, True], [False, True, True, True]]


def test_fpgm_removes_the_kernel_closest_to_its_siblings_not_the_weakest() -> None:
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():  # 0.1 is the weakest, 1.0 sits between the others: redundant
        conv.weight.copy_(torch.tensor([0.1, 1.0, 2.0]).view(1, 3, 1, 1))

    by_similarity = kernel_masks(nn.Sequential(conv), 0.34, "fpgm")["0"]
    by_norm = kernel_masks(nn.Sequential(conv), 0.34, "l1")["0"]

    assert by_similarity.tolist() == [[True, False, True]]
    assert by_norm.tolist() == [[False, True, True]]


def test_a_second_step_thins_what_is_left_and_keeps_earlier_removals(tiny: nn.Module) -> None:
    first = kernel_masks(tiny, 0.5, "l1")
    second = kernel_masks(tiny, 0.5, "fpgm", masks=first)

    for name, mask in second.items():
        earlier = first[name]
        assert not bool((mask & ~earlier).any())  # nothing removed comes back
        kept = int(earlier.sum())
        removable = kept - mask.shape[0]  # one kernel per filter stays (binds in the stem)
        assert int(mask.sum()) == kept - min(round(0.5 * kept), removable)


def test_bad_amounts_and_criteria_are_refused(tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="amount"):
        kernel_masks(tiny, 1.0)
    with pytest.raises(ModelsError, match="taylor.*cannot score kernels"):
        kernel_masks(tiny, 0.5, "taylor")


def test_ignored_layers_keep_every_kernel(tiny: nn.Module) -> None:
    masks = kernel_masks(tiny, 0.5, "l1", ignored_layers=["conv_b"])

    assert "conv_b" not in masks and "conv_a" in masks


def _quadrants(n: int) -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    for q in range(4):
        row, col = divmod(q, 2)
        images[labels == q, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 0.5
    return TensorSplit(images, labels, (3, 16, 16))


def test_zeroed_kernels_stay_zero_through_a_fine_tune(tiny: nn.Module) -> None:
    masks = kernel_masks(tiny, 0.5, "l1")
    zero_kernels(tiny, masks)
    before = {n: m.weight.detach().clone() for n, m in _kernel_layers(tiny).items()}

    with keep_kernels_masked(tiny, masks):
        fine_tune(tiny, _quadrants(64), steps=5, lr=0.1, batch_size=16)

    for name, conv in _kernel_layers(tiny).items():
        assert isinstance(conv.weight, nn.Parameter)  # the mask is baked in again
        removed = ~masks[name]
        assert bool((conv.weight[removed] == 0).all())
        assert not torch.equal(conv.weight[~removed], before[name][~removed])  # it trained


def test_kernel_masks_compare_by_content() -> None:
    mask = torch.tensor([[True, False], [True, True]])

    assert KernelMasks({"a": mask}) == KernelMasks({"a": mask.clone()})
    assert KernelMasks({"a": mask}) != KernelMasks({"a": torch.ones(2, 2, dtype=torch.bool)})
    assert len(KernelMasks({"a": torch.ones(2, 2, dtype=torch.bool)})) == 0  # dense: unlisted


def test_nonzero_params_and_effective_macs_count_the_removed_kernels() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 64, 2)
    )
    shape = (4, 8, 8)
    dense = measure_sparse_cost(model, shape)
    masks = kernel_masks(model, 0.25, "l1")  # 8 of 32 kernels
    zero_kernels(model, masks)

    sparse = measure_sparse_cost(model, shape)

    conv_macs = 8 * 4 * 9 * 64
    assert dense.nonzero_params == dense.params and dense.effective_macs == dense.macs
    assert sparse.params == count_params(model) == dense.params
    assert sparse.nonzero_params == dense.params - 8 * 9
    assert sparse.macs == count_macs(model, shape) == dense.macs
    assert sparse.effective_macs == dense.macs - conv_macs // 4
