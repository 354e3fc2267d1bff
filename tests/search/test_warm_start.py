"""Warm starts: the one-shot baselines' own plans are a compute search's first trials."""

from __future__ import annotations

import optuna

from models.prune import global_magnitude_widths
from search import (
    JobSpec,
    PruningProblem,
    global_magnitude_plan,
    load_problem,
    open_study,
    warm_start_plans,
)
from tests.search.conftest import tiny_spec


def test_global_magnitude_widths_cut_small_filters_harder(problem: PruningProblem) -> None:
    plan = global_magnitude_widths(problem.model, problem.graph, 0.5)
    assert set(plan) == {g.name for g in problem.graph.groups}
    kept = {g.name: plan[g.name] / g.channels for g in problem.graph.groups}
    assert len(set(kept.values())) > 1, "one global threshold: groups keep different shares"
    assert problem.space.predict(plan).macs < problem.baseline.cost.macs


def test_global_magnitude_plan_is_the_smallest_ratio_within_the_budget(
    trained_weights: bytes,
) -> None:
    problem = load_problem(tiny_spec(budget={"flops": 0.3}), weights=trained_weights)
    plan = global_magnitude_plan(problem)
    assert plan is not None and problem.space.fits(plan)
    assert problem.space.predict(plan).macs > 0.2 * problem.baseline.cost.macs


def test_a_compute_search_starts_with_uniform_global_and_sensitivity(
    trained_weights: bytes,
) -> None:
    data = tiny_spec(search={"compute_epochs": 2.0}, budget={"flops": 0.3}).to_json_dict()
    data["search"].pop("trials")
    problem = load_problem(JobSpec.model_validate(data), weights=trained_weights)
    from search import job_sensitivity

    plans = warm_start_plans(problem, job_sensitivity(problem))
    kinds = [kind for kind, _ in plans]
    assert kinds[0] == "uniform"
    # the global pruner's widths come second unless they are the uniform plan itself
    global_plan = global_magnitude_plan(problem)
    assert global_plan is not None
    differs = global_plan.to_dict() != plans[0][1].to_dict()
    assert ("global" in kinds) == differs
    assert len({str(plan.to_dict()) for _, plan in plans}) == len(plans)  # no duplicates
    study = open_study(
        problem, optuna.storages.InMemoryStorage(), sensitivity=lambda: job_sensitivity(problem)
    )
    queued = [t.user_attrs.get("warm_start_kind") for t in study.get_trials(deepcopy=False)]
    assert queued == kinds
    # a classic search keeps its single uniform warm start
    classic = load_problem(tiny_spec(budget={"flops": 0.3}), weights=trained_weights)
    assert [kind for kind, _ in warm_start_plans(classic)] == ["uniform"]


def test_the_sensitivity_prior_narrows_what_the_sampler_may_pick(
    trained_weights: bytes,
) -> None:
    from search import job_sensitivity
    from search.runner import run_one_trial
    from search.space import FLOORS_ATTR, study_floors

    data = tiny_spec(search={"compute_epochs": 2.0}, budget={"flops": 0.3}).to_json_dict()
    data["search"].pop("trials")
    problem = load_problem(JobSpec.model_validate(data), weights=trained_weights)
    scan = job_sensitivity(problem)
    study = open_study(problem, optuna.storages.InMemoryStorage(), sensitivity=lambda: scan)
    floors = study_floors(study)
    assert floors is not None and set(floors) == {g.name for g in problem.space.groups}
    # every warm start lies inside the narrowed space, and the floors narrow something
    for _, plan in warm_start_plans(problem, scan):
        assert all(plan.to_dict()[name] >= floor for name, floor in floors.items())
    assert any(floors[g.name] > g.min_channels for g in problem.space.groups)
    assert problem.space.fits(floors)  # the all-floors plan is within the budget
    # sampled candidates never go below a floor, before or after projection
    for _ in range(6):
        result = run_one_trial(problem, study)
        assert result is not None
        sampled = study.trials[result.number].user_attrs["sampled"]
        assert all(sampled[name] >= floor for name, floor in floors.items())
        assert all(result.plan.to_dict()[name] >= floor for name, floor in floors.items())
    # the prior is what keeps samples above the floors: unconstrained, some fall below
    free = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    narrowed = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    below = 0
    for _ in range(20):
        unconstrained = problem.space.suggest(free.ask())
        below += any(unconstrained[name] < floor for name, floor in floors.items())
        widths = problem.space.suggest(narrowed.ask(), floors)
        assert all(widths[name] >= floor for name, floor in floors.items())
    assert below > 0
    # a study without the attribute (made before the prior existed) samples as before
    old = optuna.create_study(direction="maximize")
    assert FLOORS_ATTR not in old.user_attrs and study_floors(old) is None
