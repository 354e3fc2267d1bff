"""Depth: which residual blocks can go whole, found from the weights' roles alone."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from models.cost import AnalyticCost, measure_cost
from models.errors import PlanError
from models.io import CheckpointInfo, checkpoint_bytes, load_pruned
from models.prune import (
    Plan,
    PruningGraph,
    apply_plan,
    block_containers,
    block_contributions,
    build_pruning_graph,
    removable_blocks,
    removal_order,
    remove_blocks,
    spread_removal,
    validate_plan,
)
from models.zoo import build_model


def test_a_cifar_resnets_removable_blocks_are_the_ones_that_keep_the_shape() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    # each stage's first block of stages 2 and 3 downsamples through a projection
    assert removable_blocks(model, (3, 32, 32)) == [
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer3.1",
        "layer3.2",
    ]


def test_mobilenet_v2s_removable_blocks_are_its_inverted_residuals_with_a_shortcut() -> None:
    model = mobilenet_v2(num_classes=10)
    expected = [
        f"features.{i}"
        for i, block in enumerate(model.features)
        if getattr(block, "use_res_connect", False)
    ]
    assert expected  # the architecture has some
    assert removable_blocks(model, (3, 32, 32)) == expected


def test_a_plain_network_has_no_removable_block() -> None:
    assert removable_blocks(build_model("vgg11_cifar", 10, (3, 32, 32)), (3, 32, 32)) == []
    assert removable_blocks(build_model("tiny_cnn", 10, (1, 8, 8)), (1, 8, 8)) == []


def test_finding_blocks_changes_nothing_in_the_model() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    removable_blocks(model, (3, 32, 32))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_removing_a_block_equals_zeroing_its_branch() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    names = ["layer1.1", "layer2.2", "layer3.1"]
    zeroed = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name in names:  # the branch's last BatchNorm outputs exactly zero
            zeroed.get_submodule(f"{name}.bn2").weight.zero_()
            zeroed.get_submodule(f"{name}.bn2").bias.zero_()
    reduced = remove_blocks(model, names).eval()
    assert all(isinstance(reduced.get_submodule(n), nn.Identity) for n in names)
    assert not isinstance(model.get_submodule("layer1.1"), nn.Identity)  # a copy was changed
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(reduced(x), zeroed(x))


def test_removing_an_unknown_block_is_refused() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    with pytest.raises(PlanError, match="layer9.0"):
        remove_blocks(model, ["layer9.0"])


def test_a_block_holding_a_layer_to_keep_is_not_removable() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    blocks = removable_blocks(model, (3, 32, 32), keep_layers=["layer2.1.conv2"])
    assert "layer2.1" not in blocks and "layer2.2" in blocks


def test_spread_removal_takes_every_other_block_first_included() -> None:
    blocks = [f"layer1.{i}" for i in range(1, 9)]
    assert spread_removal(blocks, 4) == ("layer1.1", "layer1.3", "layer1.5", "layer1.7")
    assert spread_removal(blocks, 0) == ()
    assert spread_removal(blocks, 8) == tuple(blocks)
    for count in range(9):  # distinct, in order, the count asked for
        removed = spread_removal(blocks, count)
        assert len(set(removed)) == count and list(removed) == sorted(removed)
    with pytest.raises(PlanError, match="cannot remove 9 of 8"):
        spread_removal(blocks, 9)


def test_block_containers_group_blocks_by_their_stage() -> None:
    assert block_containers(["layer1.0", "layer1.1", "layer2.1", "top"]) == {
        "layer1": ("layer1.0", "layer1.1"),
        "layer2": ("layer2.1",),
        "": ("top",),
    }


def test_the_graph_lists_the_blocks_a_plan_may_remove() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    graph = build_pruning_graph(model, (3, 32, 32), round_to=4)
    assert graph.blocks == tuple(removable_blocks(model, (3, 32, 32)))
    plan = {"layer1.1": 0, "layer2.1": 0}
    assert graph.removed_blocks(plan) == ("layer1.1", "layer2.1")
    live = {g.name for g in graph.live_groups(plan)}
    assert "layer1.1.conv1" not in live and "layer1.2.conv1" in live
    assert {g.name for g in graph.groups} - live == {"layer1.1.conv1", "layer2.1.conv1"}


def test_a_graph_built_without_blocks_lists_none_and_still_replays_widths() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    graph = build_pruning_graph(model, (3, 32, 32), round_to=4, find_blocks=False)
    assert graph.blocks == ()
    assert graph.groups == build_pruning_graph(model, (3, 32, 32), round_to=4).groups
    plan = Plan({graph.groups[0].name: 8})
    pruned = apply_plan(model, plan, input_shape=(3, 32, 32), graph=graph)
    info = CheckpointInfo("resnet20_cifar", 10, (3, 32, 32), plan, round_to=4)
    loaded, _ = load_pruned(checkpoint_bytes(pruned, info))  # built without blocks, too
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), pruned.eval()(x))


@pytest.mark.parametrize(
    ("arch", "shape", "removed"),
    [
        ("resnet20_cifar", (3, 32, 32), ["layer1.0", "layer2.2", "layer3.1"]),
        ("resnet56_cifar", (1, 28, 28), [f"layer{s}.{i}" for s in (1, 2, 3) for i in (1, 3, 5)]),
    ],
)
def test_a_plan_removes_blocks_and_narrows_the_rest_exactly_as_predicted(
    arch: str, shape: tuple[int, int, int], removed: list[str]
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, shape).eval()
    graph = build_pruning_graph(model, shape, round_to=4)
    plan = _narrowed(graph, removed)
    pruned = _check_depth_plan(model, graph, plan, shape)
    info = CheckpointInfo(arch, 10, shape, Plan(plan), round_to=4)
    loaded, _ = load_pruned(checkpoint_bytes(pruned, info))  # a checkpoint rebuilds it
    x = torch.randn(2, *shape)
    torch.testing.assert_close(loaded(x), pruned(x))


def test_mobilenet_v2_loses_inverted_residuals_exactly_as_predicted() -> None:
    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=10).eval()
    graph = build_pruning_graph(model, (3, 32, 32))
    _check_depth_plan(model, graph, _narrowed(graph, graph.blocks[::2]), (3, 32, 32))


def _narrowed(graph: PruningGraph, removed: Sequence[str]) -> dict[str, int]:
    """Return a plan removing ``removed`` and narrowing every other group (inside the
    removed blocks too: those widths must not matter)."""
    plan = {name: 0 for name in removed}
    for i, group in enumerate(graph.groups):
        if group.prunable and i % 2:
            plan[group.name] = group.min_channels
    return plan


def _check_depth_plan(
    model: nn.Module, graph: PruningGraph, plan: dict[str, int], shape: tuple[int, int, int]
) -> nn.Module:
    pruned = apply_plan(model, plan, input_shape=shape, graph=graph)
    removed = graph.removed_blocks(plan)
    assert removed and all(isinstance(pruned.get_submodule(n), nn.Identity) for n in removed)
    assert pruned(torch.randn(2, *shape)).shape == (2, 10)
    # the analytic cost model counts what fvcore counts on the pruned model, to the MAC
    assert AnalyticCost(model, graph).predict(plan) == measure_cost(pruned, shape)
    return pruned


def test_removing_blocks_only_is_zeroing_their_branches() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    graph = build_pruning_graph(model, (3, 32, 32))
    pruned = apply_plan(model, {"layer1.2": 0}, input_shape=(3, 32, 32), graph=graph)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(pruned(x), remove_blocks(model, ["layer1.2"]).eval()(x))


def test_a_plan_may_only_remove_a_block_whole() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    graph = build_pruning_graph(model, (3, 32, 32))
    with pytest.raises(PlanError, match="'layer1.1' is a residual block: width 0 removes it"):
        validate_plan({"layer1.1": 8}, graph)
    with pytest.raises(PlanError, match="did you mean layer1.1"):
        validate_plan({"layer1.11": 0}, graph)
    vgg = build_model("vgg11_cifar", 10, (3, 32, 32))
    with pytest.raises(PlanError, match="not a prunable group or removable block"):
        validate_plan({"features": 0}, build_pruning_graph(vgg, (3, 32, 32)))


def test_a_block_that_passes_its_input_through_contributes_nothing_and_goes_first() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    blocks = removable_blocks(model, (3, 32, 32))
    with torch.no_grad():
        for p in model.get_submodule("layer2.2").parameters():
            p.zero_()  # its branch now outputs zero: the block computes relu(x) = x
    x = torch.randn(4, 3, 32, 32)
    contributions = block_contributions(model, blocks, x)
    assert contributions["layer2.2"] == 0.0
    assert all(v > 0 for b, v in contributions.items() if b != "layer2.2")
    stage = block_containers(blocks)["layer2"]
    assert removal_order(stage, contributions)[0] == "layer2.2"
    assert block_contributions(model, blocks, x) == contributions  # same input, same numbers
    assert all(v == float(f"{v:.3g}") for v in contributions.values())  # rounded
    with pytest.raises(PlanError, match="not a block"):
        block_contributions(model, ["layer9"], x)
