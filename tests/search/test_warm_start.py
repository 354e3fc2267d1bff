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
