"""Each criterion scores channels for a reason of its own, and they disagree."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from models.criteria import CRITERIA, DATA_CRITERIA
from models.errors import ModelsError
from models.prune import apply_plan, build_pruning_graph, score_channels
from models.zoo import build_model

SHAPE = (3, 16, 16)
FAMILY = {
    "l1": "norm",
    "l2": "norm",
    "fpgm": "similarity",
    "hybrid": "hybrid",
    "random": "random",
    "taylor": "gradient",
    "activation_mean": "activation",
    "activation_l2": "activation",
    "apoz": "activation",
}


def _scores(model: nn.Module, criterion: str, calib: object, group: str) -> torch.Tensor:
    return score_channels(model, criterion, calib, input_shape=SHAPE)[group]  # type: ignore[arg-type]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_scores_every_channel(
    criterion: str, tiny: nn.Module, calib: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    scores = score_channels(tiny, criterion, calib, input_shape=SHAPE)
    graph = build_pruning_graph(tiny, SHAPE)
    for group in graph.groups:
        assert scores[group.name].shape == (group.channels,)
        assert torch.isfinite(scores[group.name]).all()
    pruned = apply_plan(tiny, {"conv_a": 8}, criterion, calib, input_shape=SHAPE)
    assert pruned.conv_a.out_channels == 8


def test_criteria_rank_channels_differently() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    g = torch.Generator().manual_seed(3)
    calib = [
        (torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))
        for _ in range(2)
    ]
    group = "layer3.0.conv1"
    order = {}
    for criterion in CRITERIA:
        scores = score_channels(model, criterion, calib, input_shape=(3, 32, 32))[group]
        order[criterion] = torch.argsort(scores, descending=True).tolist()
    for a, b in itertools.combinations(CRITERIA, 2):
        assert order[a] != order[b], f"{a} and {b} rank {group} identically"
        if FAMILY[a] != FAMILY[b]:  # different ideas should even keep different halves
            assert set(order[a][:32]) != set(order[b][:32]), f"{a} and {b} keep the same half"


@pytest.mark.parametrize("criterion", sorted(DATA_CRITERIA))
def test_data_criteria_ask_for_calibration_data(criterion: str, tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="calibration data"):
        apply_plan(tiny, {"conv_a": 8}, criterion, input_shape=SHAPE)


def test_unknown_criterion_lists_the_known_ones(tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="l1, l2"):
        apply_plan(tiny, {"conv_a": 8}, "l3", input_shape=SHAPE)


def test_random_is_reproducible_per_seed(tiny: nn.Module) -> None:
    a = score_channels(tiny, "random", input_shape=SHAPE, seed=1)["conv_a"]
    b = score_channels(tiny, "random", input_shape=SHAPE, seed=1)["conv_a"]
    c = score_channels(tiny, "random", input_shape=SHAPE, seed=2)["conv_a"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def _silence_filter(model: nn.Module, channel: int) -> None:
    """Make conv_a's ``channel`` output exactly zero after BN and ReLU."""
    with torch.no_grad():
        model.bn_a.weight[channel] = 0.0
        model.bn_a.bias[channel] = -1.0


@pytest.mark.parametrize("criterion", ["activation_mean", "activation_l2", "apoz"])
def test_activation_criteria_rank_a_dead_channel_last(
    criterion: str, tiny: nn.Module, calib: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    _silence_filter(tiny, 5)
    scores = _scores(tiny, criterion, calib, "conv_a")
    assert int(torch.argmin(scores)) == 5
    assert float(scores[5]) == 0.0


def test_taylor_gives_zero_to_a_channel_without_effect(
    tiny: nn.Module, calib: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    with torch.no_grad():
        tiny.conv_a.weight[3] = 0.0
        tiny.bn_a.weight[3] = 0.0
        tiny.conv_b.weight[:, 3] = 0.0
    scores = _scores(tiny, "taylor", calib, "conv_a")
    assert int(torch.argmin(scores)) == 3


def test_hybrid_prunes_a_strong_duplicate_before_a_weak_unique_filter(tiny: nn.Module) -> None:
    with torch.no_grad():
        w = tiny.conv_a.weight
        w[1] = 1.5 * w[0]  # strong but redundant with filter 0 (scaled copy)
        w[0] *= 2.0  # filter 0 stays the more salient of the pair
    hybrid = _scores(tiny, "hybrid", None, "conv_a")
    l2 = _scores(tiny, "l2", None, "conv_a")
    assert int(torch.argmin(hybrid)) == 1
    assert float(l2[1]) > float(l2.median())  # a saliency criterion would keep it
