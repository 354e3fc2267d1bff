"""Budget-aware sampling: projected plans fit and never grow."""

from __future__ import annotations

import random

import pytest

from models.cost import AnalyticCost
from models.prune import build_pruning_graph
from models.zoo import build_model
from search import PruningProblem, SearchSpace
from search.budget import ResolvedBudget


@pytest.mark.parametrize("seed", range(20))
def test_projection_fits_the_budget_and_never_widens(problem: PruningProblem, seed: int) -> None:
    space = problem.space
    rng = random.Random(seed)
    sampled = {g.name: rng.choice(g.allowed_widths()) for g in space.groups}
    plan = space.project(sampled)
    assert space.fits(plan)
    assert all(plan[g.name] <= sampled[g.name] for g in space.groups)
    assert all(g.is_allowed(plan[g.name]) for g in space.groups)


def test_projection_keeps_plans_that_already_fit(problem: PruningProblem) -> None:
    smallest = problem.space.smallest()
    assert problem.space.project(dict(smallest)) == smallest


def test_projection_uses_the_budget(problem: PruningProblem) -> None:
    space = problem.space
    full = {g.name: g.channels for g in space.groups}
    plan = space.project(full)
    limit = problem.budget.max_macs
    assert limit is not None
    # the greedy refill leaves less than one smallest step of slack unused
    assert space.predict(plan).macs > 0.8 * limit


def test_uniform_plan_at_the_budget_fits(problem: PruningProblem) -> None:
    plan = problem.space.uniform_at_budget()
    assert problem.space.fits(plan)
    widths = [plan[g.name] / g.channels for g in problem.space.groups]
    assert max(widths) - min(widths) <= 0.5  # roughly the same fraction everywhere


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.125])
def test_uniform_plan_uses_most_of_a_macs_budget_on_narrow_layers(fraction: float) -> None:
    # resnet20_cifar's 16-channel groups with step 4: rounding every width down would
    # leave half of a 25 % budget unused (16 x 0.49 -> 4 channels)
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    graph = build_pruning_graph(model, (3, 32, 32), round_to=4)
    cost = AnalyticCost(model, graph)
    budget = ResolvedBudget(max_macs=int(cost.baseline.macs * fraction))
    space = SearchSpace(graph, cost, budget)
    plan = space.uniform_at_budget()
    assert space.fits(plan)
    assert space.predict(plan).macs >= 0.85 * budget.max_macs


def test_parameter_budget_is_projected_too(problem: PruningProblem) -> None:
    budget = ResolvedBudget(max_params=int(problem.baseline.cost.params * 0.4))
    space = SearchSpace(problem.graph, problem.cost, budget)
    plan = space.project({g.name: g.channels for g in space.groups})
    assert space.predict(plan).params <= budget.max_params


def test_distributions_cover_each_group(problem: PruningProblem) -> None:
    dists = problem.space.distributions()
    assert set(dists) == {g.name for g in problem.space.groups}
    params = problem.space.params_from_widths(dict(problem.space.smallest()))
    assert problem.space.widths_from_params(params) == dict(problem.space.smallest())
