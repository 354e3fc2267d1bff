"""The job spec refuses what cannot run, with messages that say what to do."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from search import BudgetUnreachableError, JobSpec, load_problem
from tests.search.conftest import tiny_spec


def _message(**data: object) -> str:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({"arch": "tiny_cnn", "budget": {"flops": 0.5}, **data})
    return str(info.value)


def test_unknown_architecture_names_the_closest() -> None:
    assert "did you mean resnet20_cifar" in _message(arch="resnet20cifar").lower()


def test_trials_must_be_positive() -> None:
    assert "greater than or equal to 1" in _message(search={"trials": -3})
    assert "greater than or equal to 1" in _message(search={"trials": 0})


def test_flops_is_a_fraction() -> None:
    assert "less than or equal to 1" in _message(budget={"flops": 2})


def test_unknown_fields_are_refused() -> None:
    assert "Extra inputs are not permitted" in _message(budgett={"flops": 0.5})


def test_constrained_needs_a_budget() -> None:
    with pytest.raises(ValidationError, match="needs a budget"):
        JobSpec.model_validate({"arch": "tiny_cnn"})


def test_scalar_needs_a_resource_target() -> None:
    with pytest.raises(ValidationError, match="penalizes cost above a target"):
        JobSpec.model_validate(
            {"arch": "tiny_cnn", "objective": "scalar", "budget": {"max_accuracy_drop": 0.01}}
        )


def test_pareto_needs_no_budget() -> None:
    assert JobSpec.model_validate({"arch": "tiny_cnn", "objective": "pareto"}).budget.is_empty


def test_unreachable_budget_says_the_smallest_reachable() -> None:
    with pytest.raises(BudgetUnreachableError, match=r"smallest plan still needs [\d,]+ MACs"):
        load_problem(tiny_spec(budget={"flops": 0.01}))


def test_study_name_ignores_the_trial_count() -> None:
    assert (
        tiny_spec(search={"trials": 3}).study_name()
        == tiny_spec(search={"trials": 30}).study_name()
    )
    assert tiny_spec(budget={"flops": 0.4}).study_name() != tiny_spec().study_name()


def test_spec_lists_exactly_the_criteria_models_have() -> None:
    from models.criteria import CRITERIA
    from search.spec import CRITERION_NAMES

    assert sorted(CRITERION_NAMES) == sorted(CRITERIA)
