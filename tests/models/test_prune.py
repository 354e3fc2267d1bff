"""Pruning removes exactly the planned channels and nothing the user needs."""

from __future__ import annotations

import os

import pytest
import torch
import torch_pruning as tp
from torch import nn

from models.cost import AnalyticCost, measure_cost
from models.errors import PlanError
from models.io import CheckpointInfo, checkpoint_bytes, load_pruned
from models.prune import Plan, apply_plan, build_pruning_graph, output_channels, uniform_plan
from models.zoo import build_model, get_architecture, list_architectures
from tests.models._plans import random_plan

SMALL_ZOO = [a.name for a in list_architectures() if a.family in ("cifar", "small")]
TORCHVISION_ZOO = [a.name for a in list_architectures() if a.family == "torchvision"]
# One of every torchvision family (the fast tests cover resnet, mobilenet_v2,
# efficientnet_b0 and resnext); INFERPRUNE_FULL_ZOO=1 runs every model, and
# benchmarks/zoo_coverage.py records the full sweep. VGG is left to those: its 130M
# parameters made it the slowest case here, and its parts are covered by alexnet (a plain
# conv stack flattened from a k x k pool into 4096-wide linears) and by vgg11_cifar in the
# small zoo (conv-BN-ReLU blocks between max-pools).
TORCHVISION_FAMILIES = [
    "alexnet",
    "googlenet",
    "inception_v3",
    "densenet121",
    "mnasnet0_5",
    "mobilenet_v3_small",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "convnext_tiny",
    "efficientnet_v2_s",
    "wide_resnet50_2",
]


def _check_random_plan(
    arch: str, shape: tuple[int, int, int], seed: int = 0
) -> tuple[nn.Module, Plan]:
    model = build_model(arch, 10, shape)
    graph = build_pruning_graph(model, shape)
    assert graph.groups, f"{arch} has no prunable group"
    plan = random_plan(graph, seed)
    predicted = AnalyticCost(model, graph).predict(plan)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    pruned = apply_plan(model, plan, "l1", input_shape=shape, graph=graph)

    with torch.no_grad():
        out = pruned(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    # every group's root layer produces exactly the planned channels (see output_channels)
    modules = dict(pruned.named_modules())
    widths = {g.name: output_channels(modules[g.name]) for g in graph.groups}
    assert widths == {g.name: plan.width(g) for g in graph.groups}
    measured = measure_cost(pruned, shape)
    original = measure_cost(model, shape)
    assert measured.macs < original.macs
    assert abs(predicted.macs - measured.macs) <= 0.01 * measured.macs
    assert abs(predicted.params - measured.params) <= 0.01 * measured.params
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key]), key
    return pruned, plan


@pytest.mark.parametrize("arch", SMALL_ZOO)
def test_random_plan_applies_to_every_small_zoo_model(arch: str) -> None:
    _check_random_plan(arch, get_architecture(arch).default_input_shape)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch",
    TORCHVISION_ZOO
    if os.environ.get("INFERPRUNE_FULL_ZOO") == "1"
    else [a for a in TORCHVISION_FAMILIES if a in TORCHVISION_ZOO],
)
def test_random_plan_applies_to_every_torchvision_family(arch: str) -> None:
    side = max(64, get_architecture(arch).min_spatial)
    shape = (3, side, side)
    pruned, plan = _check_random_plan(arch, shape)
    # the pruned checkpoint loads back to the same network (issue #10: mnasnet did not)
    loaded, _ = load_pruned(checkpoint_bytes(pruned, CheckpointInfo(arch, 10, shape, plan)))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned.eval()(x))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_random_plan_applies_to_common_torchvision_models(arch: str) -> None:
    _check_random_plan(arch, (3, 64, 64), seed=1)


def test_groups_couple_residual_layers(tiny: nn.Module) -> None:
    graph = build_pruning_graph(tiny, (3, 16, 16))
    residual = graph.group("stem.0")
    # the residual add ties the stem's output to conv_b's output and down.0's input
    assert {"stem.0", "stem.1", "conv_b", "bn_b", "down.0", "conv_a"} <= set(residual.layers)
    assert [g.name for g in graph.groups] == ["stem.0", "conv_a", "down.0"]


def test_classifier_outputs_are_never_pruned(tiny: nn.Module) -> None:
    graph = build_pruning_graph(tiny, (3, 16, 16))
    assert graph.output_layer == "fc"
    assert "fc" not in graph.names
    pruned = apply_plan(tiny, uniform_plan(graph, 0.5), input_shape=(3, 16, 16), graph=graph)
    assert isinstance(pruned.fc, nn.Linear) and pruned.fc.out_features == 10


def test_ignored_layers_keep_their_channels(tiny: nn.Module) -> None:
    graph = build_pruning_graph(tiny, (3, 16, 16), ignored_layers=["conv_a"])
    assert "conv_a" not in graph.names
    pruned = apply_plan(tiny, uniform_plan(graph, 0.5), input_shape=(3, 16, 16), graph=graph)
    assert pruned.conv_a.out_channels == 24


def test_unknown_group_is_refused_with_a_suggestion(tiny: nn.Module) -> None:
    with pytest.raises(PlanError, match="did you mean conv_a"):
        apply_plan(tiny, {"conv_aa": 8}, input_shape=(3, 16, 16))


@pytest.mark.parametrize("width", [0, 5, 25, 40])
def test_impossible_widths_are_refused_with_the_allowed_ones(tiny: nn.Module, width: int) -> None:
    with pytest.raises(PlanError, match="may keep 8, 16, 24"):
        apply_plan(tiny, {"conv_a": width}, input_shape=(3, 16, 16))


def test_non_integer_width_is_refused() -> None:
    with pytest.raises(PlanError, match="integer"):
        Plan({"conv_a": 7.5})  # type: ignore[dict-item]


def test_narrow_layers_may_keep_any_width() -> None:
    model = build_model("lenet5")
    graph = build_pruning_graph(model, (1, 32, 32))
    first = graph.group("features.0")
    assert first.channels == 6 and first.allowed_widths() == [1, 2, 3, 4, 5, 6]
    pruned = apply_plan(model, {"features.0": 3}, input_shape=(1, 32, 32), graph=graph)
    assert pruned.features[0].out_channels == 3


def test_l1_keeps_the_filters_with_the_largest_norms(tiny: nn.Module) -> None:
    weights = tiny.conv_a.weight.detach().clone()
    pruned = apply_plan(tiny, {"conv_a": 8}, "l1", input_shape=(3, 16, 16))
    norms = weights.abs().flatten(1).sum(1)
    # the group's score also counts conv_b's inputs and bn_a; compare on the kept set
    kept = pruned.conv_a.weight.detach()
    matches = [int(torch.nonzero((weights == k).all(dim=(1, 2, 3)))[0]) for k in kept]
    assert len(set(matches)) == 8 and matches == sorted(matches)
    assert norms[matches].mean() > norms.mean()


def test_same_plan_gives_identical_models(tiny: nn.Module) -> None:
    a = apply_plan(tiny, {"conv_a": 16, "down.0": 8}, input_shape=(3, 16, 16))
    b = apply_plan(tiny, {"conv_a": 16, "down.0": 8}, input_shape=(3, 16, 16))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_uniform_plan_matches_torch_pruning_ratio() -> None:
    model = build_model("resnet18", 10, (3, 64, 64))
    graph = build_pruning_graph(model, (3, 64, 64))
    ours = apply_plan(model, uniform_plan(graph, 0.5), input_shape=(3, 64, 64), graph=graph)

    theirs = build_model("resnet18", 10, (3, 64, 64))
    pruner = tp.pruner.BasePruner(
        theirs,
        torch.randn(1, 3, 64, 64),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[theirs.fc],
        round_to=8,
    )
    pruner.step()
    ours_widths = {n: m.out_channels for n, m in ours.named_modules() if isinstance(m, nn.Conv2d)}
    theirs_widths = {
        n: m.out_channels for n, m in theirs.named_modules() if isinstance(m, nn.Conv2d)
    }
    assert ours_widths == theirs_widths


def test_uniform_plan_ratio_must_be_a_fraction(tiny: nn.Module) -> None:
    graph = build_pruning_graph(tiny, (3, 16, 16))
    with pytest.raises(PlanError):
        uniform_plan(graph, 1.0)


def test_grouped_convolutions_prune_in_whole_slices() -> None:
    model = build_model("resnext50_32x4d", 10, (3, 64, 64))
    graph = build_pruning_graph(model, (3, 64, 64))
    sliced = [g for g in graph.groups if g.slices > 1]
    assert sliced and all(g.step % g.slices == 0 for g in sliced)
    group = sliced[0]
    plan = {group.name: group.channels - group.step}
    pruned = apply_plan(model, plan, input_shape=(3, 64, 64), graph=graph)
    assert pruned(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_plan_round_trips_through_json() -> None:
    plan = Plan({"a": 8, "b.c": 16})
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json('{"plan": {"a": 8}}') == Plan({"a": 8})
    with pytest.raises(PlanError):
        Plan.from_json("[1, 2]")
