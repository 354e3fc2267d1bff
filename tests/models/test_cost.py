"""MACs are MACs (fvcore, cross-checked with torch), and the analytic model agrees."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch.utils.flop_counter import FlopCounterMode

from models.cost import (
    AnalyticCost,
    check_plans,
    count_macs,
    count_params,
    measure_cost,
    size_bytes,
)
from models.prune import apply_plan, build_pruning_graph, uniform_plan
from models.zoo import build_model
from tests.models._plans import random_plan


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("tiny_cnn", (3, 16, 16)),
        ("lenet5", (1, 28, 28)),
        ("resnet20_cifar", (3, 32, 32)),
        ("mobilenet_v2", (3, 64, 64)),
    ],
)
def test_fvcore_macs_are_half_of_torch_flops(arch: str, shape: tuple[int, int, int]) -> None:
    model = build_model(arch, 10, shape)
    x = torch.zeros(1, *shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    by_op = analysis.by_operator()
    # FlopCounterMode counts 2 FLOPs per multiply-add of conv and matmul, nothing else
    conv_and_linear = sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "mm"))
    assert conv_and_linear == counter.get_total_flops() // 2
    # count_macs adds what fvcore also counts (BN, pooling): never less than conv+linear
    assert count_macs(model, shape) >= conv_and_linear


def test_known_counts_for_lenet5() -> None:
    model = build_model("lenet5", 10, (1, 28, 28))
    conv = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25
    linear = 400 * 120 + 120 * 84 + 84 * 10
    pooling = 16 * 5 * 5  # the adaptive pool reads each of its 5x5 inputs once
    assert count_macs(model, (1, 28, 28)) == conv + linear + pooling
    params = (
        (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    )
    assert count_params(model) == params
    assert size_bytes(model) == params * 4


def test_analytic_baseline_is_the_measured_cost() -> None:
    model = build_model("resnet20_cifar")
    analytic = AnalyticCost(model, build_pruning_graph(model, (3, 32, 32)))
    assert analytic.baseline == measure_cost(model, (3, 32, 32))
    assert analytic.predict({}) == analytic.baseline


@pytest.mark.parametrize("seed", range(4))
def test_analytic_cost_matches_fvcore_on_pruned_models(seed: int) -> None:
    model = build_model("resnet20_cifar")
    graph = build_pruning_graph(model, (3, 32, 32))
    analytic = AnalyticCost(model, graph)
    plan = random_plan(graph, seed)
    predicted = analytic.predict(plan)
    measured = measure_cost(
        apply_plan(model, plan, input_shape=(3, 32, 32), graph=graph), (3, 32, 32)
    )
    assert abs(predicted.macs - measured.macs) <= 0.01 * measured.macs
    assert predicted.params == measured.params
    assert predicted.size_bytes == measured.size_bytes


def test_uniform_half_plan_roughly_quarters_the_convolutions() -> None:
    model = build_model("vgg11_cifar")
    graph = build_pruning_graph(model, (3, 32, 32))
    ratio = AnalyticCost(model, graph).ratio(uniform_plan(graph, 0.5))
    # halving inputs and outputs of every conv but the first quarters their MACs
    assert 0.25 <= ratio <= 0.3


@pytest.mark.parametrize("arch", ["resnet20_cifar", "vgg11_cifar"])
def test_the_analytic_cost_is_exact_on_every_check_plan(arch: str) -> None:
    model = build_model(arch)
    graph = build_pruning_graph(model, (3, 32, 32))
    analytic = AnalyticCost(model, graph)
    plans = check_plans(graph, seed=0)
    assert len(plans) == 3 + bool(graph.blocks)
    for plan in plans:
        pruned = apply_plan(model, plan, input_shape=(3, 32, 32), graph=graph)
        assert analytic.matches(plan, pruned)
        assert analytic.predict(plan) == measure_cost(pruned, (3, 32, 32))


def test_check_plans_remove_blocks_where_the_graph_has_them() -> None:
    graph = build_pruning_graph(build_model("resnet20_cifar"), (3, 32, 32))
    assert graph.blocks
    removed = [name for name in graph.blocks if check_plans(graph)[-1].get(name) == 0]
    assert removed == list(graph.blocks[::2])


def test_a_pooling_the_layer_terms_miss_is_caught() -> None:
    # mobilenet_v2 pools its last features in its own forward: fvcore counts the pool,
    # the analytic model holds it constant, so a plan narrowing that group misses
    model = build_model("mobilenet_v2", 10, (3, 32, 32))
    graph = build_pruning_graph(model, (3, 32, 32))
    analytic = AnalyticCost(model, graph)
    narrowest = check_plans(graph)[0]
    pruned = apply_plan(model, narrowest, input_shape=(3, 32, 32), graph=graph)
    assert not analytic.matches(narrowest, pruned)
    assert analytic.predict(narrowest).params == count_params(pruned)
