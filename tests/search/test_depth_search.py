"""Depth in the search: per-stage block counts beside the widths, projected, warm-started,
and delivered as a model that loads without our search."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.distributions import IntDistribution
from safetensors.torch import save_file

from models.io import checkpoint_bytes, load_pruned
from models.prune import Plan
from models.schedules import ScheduleConfig
from models.zoo import build_model
from search import JobSpec, PruningProblem, SearchSpace, load_problem, open_study, run_search
from search.budget import ResolvedBudget
from search.errors import BudgetUnreachableError, SpecError
from search.lifecycle import conclude_search
from search.oneshot import apply_once
from search.space import DEPTH_PREFIX
from search.warm_start import warm_start_plans
from tests.search.conftest import tiny_spec, trained_checkpoint

STAGES = {
    "layer1": ("layer1.0", "layer1.1", "layer1.2"),
    "layer2": ("layer2.1", "layer2.2"),
    "layer3": ("layer3.1", "layer3.2"),
}
"""resnet20_cifar's removable blocks: stages 2 and 3 downsample in their first block."""


def _resnet_spec(**overrides: Any) -> JobSpec:
    data = tiny_spec(arch="resnet20_cifar", **overrides).to_json_dict()
    if "compute_epochs" in data["search"] and data["search"]["compute_epochs"] is not None:
        data["search"].pop("trials", None)
    return JobSpec.model_validate(data)


@pytest.fixture(scope="module")
def trained_resnet() -> bytes:
    """resnet20 trained one epoch on the synthetic set, as checkpoint bytes."""
    return trained_checkpoint("resnet20_cifar", 1)


@pytest.fixture(scope="module")
def resnet() -> PruningProblem:
    """resnet20 (random weights) on the synthetic set at 25 % of its MACs, with compute."""
    spec = _resnet_spec(budget={"flops": 0.25}, search={"compute_epochs": 1.0})
    return load_problem(spec)


def test_each_stage_of_blocks_is_one_more_integer_of_the_space(resnet: PruningProblem) -> None:
    space = resnet.space
    assert space.stages == STAGES
    dists = space.distributions()
    for stage, blocks in STAGES.items():
        assert dists[DEPTH_PREFIX + stage] == IntDistribution(0, len(blocks))
    assert set(dists) - {DEPTH_PREFIX + s for s in STAGES} == {g.name for g in space.groups}


def test_a_depth_count_removes_blocks_spread_over_the_stage(resnet: PruningProblem) -> None:
    space = resnet.space
    params = space.params_from_widths({})
    params |= {f"{DEPTH_PREFIX}layer1": 2, f"{DEPTH_PREFIX}layer3": 1}
    plan = space.widths_from_params(params)
    assert resnet.graph.removed_blocks(plan) == ("layer1.0", "layer1.2", "layer3.1")
    # the groups inside removed blocks are not in the plan: their widths do not matter
    assert "layer1.0.conv1" not in plan and "layer1.1.conv1" in plan
    again = space.params_from_widths(plan)
    assert {k: v for k, v in again.items() if k.startswith(DEPTH_PREFIX)} == {
        f"{DEPTH_PREFIX}layer1": 2,
        f"{DEPTH_PREFIX}layer2": 0,
        f"{DEPTH_PREFIX}layer3": 1,
    }
    assert space.widths_from_params(again) == plan


def test_with_contributions_a_stage_loses_the_blocks_that_change_the_least_first(
    resnet: PruningProblem,
) -> None:
    contributions = {b: 1.0 for b in resnet.graph.blocks}
    contributions |= {"layer1.2": 0.1, "layer1.0": 0.2, "layer2.2": 0.3, "layer3.1": 0.05}
    space = SearchSpace(
        resnet.graph, resnet.cost, resnet.budget, depth=True, contributions=contributions
    )
    counts = {"layer1": 2, "layer2": 1, "layer3": 1}
    assert space.removal(counts) == {"layer1.0": 0, "layer1.2": 0, "layer2.2": 0, "layer3.1": 0}
    # one more block of a stage keeps the ones already gone (the order is nested)
    assert set(space.removal({"layer1": 1})) == {"layer1.2"}
    assert set(space.removal({"layer1": 3})) == set(STAGES["layer1"])
    params = space.params_from_widths({})
    params |= {DEPTH_PREFIX + stage: n for stage, n in counts.items()}
    plan = space.widths_from_params(params)
    assert space.widths_from_params(space.params_from_widths(plan)) == plan
    half = dict(warm_start_plans(dataclasses.replace(resnet, space=space)))["depth"]
    assert resnet.graph.removed_blocks(half) == ("layer1.2", "layer2.2", "layer3.1")


def test_a_trained_model_orders_its_blocks_by_contribution_when_it_loads(
    trained_resnet: bytes,
) -> None:
    problem = load_problem(
        _resnet_spec(budget={"flops": 0.25}, search={"compute_epochs": 1.0}),
        weights=trained_resnet,
    )
    contributions = problem.space.contributions
    assert contributions is not None and set(contributions) == set(problem.graph.blocks)
    again = load_problem(
        _resnet_spec(budget={"flops": 0.25}, search={"compute_epochs": 1.0}),
        weights=trained_resnet,
    )
    assert again.space.contributions == contributions  # every worker removes the same blocks
    stage = STAGES["layer2"]
    least = min(stage, key=lambda b: (contributions[b], stage.index(b)))
    assert set(problem.space.removal({"layer2": 1})) == {least}


@pytest.mark.parametrize("seed", range(8))
def test_projection_keeps_the_sampled_depth_and_fits(resnet: PruningProblem, seed: int) -> None:
    space = resnet.space
    rng = random.Random(seed)
    params = {
        name: rng.randrange(d.low, d.high + 1, d.step)
        for name, d in space.distributions().items()
        if isinstance(d, IntDistribution)
    }
    sampled = space.widths_from_params(params)
    plan = space.project(sampled)
    assert space.fits(plan)
    removed = set(resnet.graph.removed_blocks(sampled))
    assert removed <= set(resnet.graph.removed_blocks(plan))
    for group in resnet.graph.live_groups(plan):
        if group in space.groups:
            assert plan[group.name] <= sampled.get(group.name, group.channels)


def test_a_budget_only_depth_reaches_removes_blocks(resnet: PruningProblem) -> None:
    narrowest = {g.name: g.min_channels for g in resnet.space.groups}
    below = int(resnet.cost.predict(narrowest).macs * 0.9)
    budget = ResolvedBudget(max_macs=below)
    with pytest.raises(BudgetUnreachableError):  # widths alone cannot get there
        SearchSpace(resnet.graph, resnet.cost, budget).check_reachable()
    deep = SearchSpace(resnet.graph, resnet.cost, budget, depth=True)
    plan = deep.project({})
    assert deep.fits(plan) and resnet.graph.removed_blocks(plan)
    uniform = deep.uniform_at_budget()
    assert deep.fits(uniform) and resnet.graph.removed_blocks(uniform)


def test_the_search_warm_starts_from_a_half_depth_uniform_plan(resnet: PruningProblem) -> None:
    plans = dict(warm_start_plans(resnet))
    assert "depth" in plans and not resnet.graph.removed_blocks(plans["uniform"])
    depth = plans["depth"]
    assert resnet.graph.removed_blocks(depth) == ("layer1.1", "layer2.1", "layer3.1")
    assert resnet.space.fits(depth)
    # fewer blocks, wider layers for the same budget
    assert all(depth[g.name] >= plans["uniform"][g.name] for g in resnet.graph.live_groups(depth))


def test_depth_can_be_turned_off() -> None:
    problem = load_problem(_resnet_spec(pruning={"depth": False}, search={"compute_epochs": 1}))
    assert problem.space.stages == {}
    assert not any(name.startswith(DEPTH_PREFIX) for name in problem.space.distributions())
    assert "depth" not in dict(warm_start_plans(problem))


def test_depth_is_on_by_default_only_where_the_rest_of_the_spec_allows_it() -> None:
    assert tiny_spec().searches_depth
    assert tiny_spec(latency={"predictor": "table"}).searches_depth  # the table knows blocks
    assert not tiny_spec(
        pruning={"schedule": "iterative"}, finetune={"final_epochs": 1}
    ).searches_depth
    sequence = [{"granularity": "kernel", "criterion": "l1", "amount": 0.5}]
    assert not tiny_spec(pruning={"sequence": sequence}).searches_depth


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pruning": {"depth": True, "schedule": "agp"}}, "agp schedule reaches widths"),
        (
            {
                "pruning": {
                    "depth": True,
                    "sequence": [{"granularity": "kernel", "criterion": "l1", "amount": 0.5}],
                }
            },
            "hybrid sequence prunes widths and kernels",
        ),
    ],
)
def test_asking_for_depth_where_it_cannot_work_is_refused(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises((SpecError, ValueError), match=message):
        tiny_spec(**overrides)


def test_a_latency_table_search_removes_blocks_with_predicted_latency() -> None:
    table = {"predictor": "table", "repeats": 3, "warmup": 1}
    # the MACs budget binds (a latency one would hang on this machine's timings): the
    # table still predicts, and the search projects onto, every plan's latency
    spec = _resnet_spec(
        budget={"flops": 0.3, "latency_ms": 1e6},
        latency=table,
        search={"compute_epochs": 0.6},
    )
    problem = load_problem(spec)
    table_ = problem.latency_table
    assert table_ is not None and table_.knows_depth
    assert set(problem.space.stages) == set(STAGES)  # depth is searched beside the widths
    predict = problem.space.latency
    assert predict is not None
    half = {"layer1.1": 0, "layer2.2": 0, "layer3.2": 0}
    assert predict(half) < predict({})  # removed blocks cost nothing
    study = open_study(problem, optuna.storages.InMemoryStorage())
    fidelity = problem.fidelity
    assert fidelity is not None
    run_search(problem, study, trials=fidelity.trials)
    predicted = [t for t in study.trials if t.user_attrs.get("latency_source") == "table"]
    assert predicted
    removing = [t for t in study.trials if t.user_attrs.get("warm_start_kind") == "depth"]
    assert removing and removing[0].user_attrs.get("latency_source") == "table"


def test_a_table_that_cannot_remove_blocks_turns_automatic_depth_off(
    resnet: PruningProblem,
) -> None:
    from types import SimpleNamespace

    from search.loading import _table_knows_depth

    blind: Any = SimpleNamespace(knows_depth=False)  # an export without module scopes
    assert _table_knows_depth(_resnet_spec(), resnet.graph, blind) is False
    assert _table_knows_depth(_resnet_spec(), resnet.graph, None) is True
    with pytest.raises(SpecError, match="set pruning.depth to false"):
        _table_knows_depth(_resnet_spec(pruning={"depth": True}), resnet.graph, blind)


def test_a_search_with_depth_delivers_a_model_that_loads_alone() -> None:
    spec = _resnet_spec(budget={"flops": 0.2}, search={"compute_epochs": 0.6})
    problem = load_problem(spec)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    fidelity = problem.fidelity
    assert fidelity is not None
    run_search(problem, study, trials=fidelity.trials)
    kinds = {t.user_attrs.get("warm_start_kind") for t in study.trials}
    assert "depth" in kinds
    removing = [t for t in study.trials if problem.graph.removed_blocks(t.user_attrs["plan"])]
    assert removing  # the warm start at least; every trial's plan was built and trained
    conclusion = conclude_search(problem, study.trials, storage="memory", study_name="s")
    assert conclusion.status == "succeeded" and conclusion.final is not None
    plan = conclusion.report["best"]["plan"]
    assert problem.space.fits(plan)
    model, info = load_pruned(conclusion.artifacts["model.safetensors"])
    assert dict(info.plan) == plan
    assert problem.graph.removed_blocks(plan) == tuple(
        name
        for name in problem.graph.blocks
        if type(model.get_submodule(name)).__name__ == "Identity"
    )


def test_apply_once_removes_blocks_and_refuses_them_with_a_gradual_schedule(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "resnet20.safetensors"
    save_file(build_model("resnet20_cifar", 10, (3, 16, 16)).state_dict(), str(weights))
    common: dict[str, Any] = {
        "arch": "resnet20_cifar",
        "weights": weights,
        "num_classes": 10,
        "input_shape": (3, 16, 16),
    }
    plan = Plan({"layer1.1": 0, "layer3.2": 0, "layer2.1.conv1": 8})
    result = apply_once(plan=plan, **common)
    assert result.info.plan["layer1.1"] == 0 and "layer1.1.conv1" not in result.info.plan
    assert result.after.macs < result.before.macs
    loaded, _ = load_pruned(checkpoint_bytes(result.model, result.info))
    assert isinstance(loaded.get_submodule("layer3.2"), torch.nn.Identity)
    with pytest.raises(SpecError, match="removes residual blocks, which only the one_shot"):
        apply_once(
            plan=plan,
            dataset="synthetic",
            finetune_epochs=1,
            schedule=ScheduleConfig(name="iterative"),
            **common,
        )
