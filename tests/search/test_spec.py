"""The job spec refuses what cannot run, with messages that say what to do."""

from __future__ import annotations

from typing import Any

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


def test_schedules_are_the_models_list_and_default_to_one_shot() -> None:
    from models.schedules import SCHEDULES

    spec = JobSpec.model_validate({"arch": "tiny_cnn", "budget": {"flops": 0.5}})
    assert spec.pruning.schedule == "one_shot"
    for name in SCHEDULES:
        data = {"schedule": name}
        budget = {"flops": 0.5, "max_accuracy_drop": 0.02}
        spec = JobSpec.model_validate({"arch": "tiny_cnn", "budget": budget, "pruning": data})
        assert spec.pruning.schedule == name
    assert "Input should be 'one_shot'" in _message(pruning={"schedule": "gradual"})


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"pruning": {"schedule_steps": 3}}, "one_shot prunes once"),
        ({"pruning": {"schedule": "agp", "criteria": ["taylor"]}}, "belongs to the iterative"),
        (
            {"pruning": {"schedule": "iterative", "schedule_steps": 1, "criteria": ["l1", "fpgm"]}},
            "2 criteria need at least 2 steps",
        ),
        ({"pruning": {"schedule": "iterative", "criteria": ["l9"]}}, "Input should be 'l1'"),
        ({"pruning": {"schedule": "one_cycle", "schedule_steps": 1}}, "at least 2 steps"),
        ({"pruning": {"schedule": "adaptive"}}, "budget.max_accuracy_drop"),
        ({"pruning": {"schedule": "agp"}, "finetune": {"final_epochs": 0}}, "final_epochs"),
        (
            {"pruning": {"schedule": "agp"}, "search": {"compute_epochs": 5}},
            "already pruned",
        ),
    ],
)
def test_schedule_settings_that_cannot_run_are_refused(data: dict[str, Any], says: str) -> None:
    assert says in _message(**data)


def test_the_schedule_does_not_rename_the_study() -> None:
    """The schedule changes the final fine-tune only: a rerun resumes the same trials."""
    iterative = {"schedule": "iterative", "schedule_steps": 4, "criteria": ["taylor", "fpgm"]}
    assert tiny_spec(pruning=iterative).study_name() == tiny_spec().study_name()


# --- limits: every number is bounded to what the code below it accepts --------------------


def _numbers(schema: Any, defs: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every integer / number leaf of a JSON schema as (path, schema)."""
    found: list[tuple[str, Any]] = []
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _numbers(defs[ref.rsplit("/", 1)[-1]], defs, path)
    for key in ("anyOf", "prefixItems"):
        for index, option in enumerate(schema.get(key, [])):
            found += _numbers(option, defs, f"{path}[{index}]" if key == "prefixItems" else path)
    for name, sub in (schema.get("properties") or {}).items():
        found += _numbers(sub, defs, f"{path}.{name}" if path else name)
    if schema.get("type") in ("integer", "number"):
        found.append((path, schema))
    return found


def test_every_number_in_the_spec_has_both_bounds_in_its_schema() -> None:
    """A new numeric field without a documented upper bound fails here: unbounded, 10^30
    is accepted and fails later in a worker (numpy seeds are 32-bit)."""
    schema = JobSpec.model_json_schema()
    numbers = _numbers(schema, schema.get("$defs", {}))
    assert len(numbers) > 20
    for path, leaf in numbers:
        assert "maximum" in leaf or "exclusiveMaximum" in leaf, path
        assert "minimum" in leaf or "exclusiveMinimum" in leaf, path


@pytest.mark.parametrize(
    ("data", "where", "limit"),
    [
        ({"input_shape": [3, 3000, 3000]}, "input_shape.1", "2048"),
        ({"input_shape": [3, 100_000, 100_000]}, "input_shape.2", "2048"),
        ({"input_shape": [3, 2**31, 2**31]}, "input_shape.1", "2048"),
        ({"input_shape": [100_000, 32, 32]}, "input_shape.0", "64"),
        ({"input_shape": [3, 10**400, 8]}, "input_shape.1", "2048"),
        ({"num_classes": 10**6}, "num_classes", "100000"),
        ({"search": {"seed": 10**30}}, "search.seed", "2147483647"),
        ({"search": {"timeout_s": 1e300}}, "search.timeout_s", "2592000"),
        ({"budget": {"macs": 10**30}}, "budget.macs", "1000000000000000"),
        ({"finetune": {"steps_per_trial": 10**12}}, "finetune.steps_per_trial", "1000000"),
        ({"arch": "x" * 10_000}, "arch", "100 characters"),
        ({"pruning": {"ignored_layers": ["a"] * 5000}}, "pruning.ignored_layers", "1024"),
    ],
)
def test_out_of_range_values_name_the_field_and_the_limit(
    data: dict[str, object], where: str, limit: str
) -> None:
    message = _message(**data)
    assert where in message and limit in message, message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_everywhere(value: float) -> None:
    assert "finite number" in _message(budget={"params": value})
    assert "finite number" in _message(budget={"flops": 0.5, "latency_ms": value})


def test_the_largest_real_uses_still_fit() -> None:
    spec = JobSpec.model_validate(
        {
            "arch": "resnet50",
            "num_classes": 100_000,
            "input_shape": [64, 2048, 2048],
            "budget": {"flops": 0.5},
            "search": {"seed": 2**31 - 1, "trials": 10_000},
        }
    )
    assert spec.input_shape == (64, 2048, 2048)
    assert JobSpec.model_validate(
        {"arch": "resnet50", "input_shape": [3, 224, 224], "budget": {"flops": 0.5}}
    ).input_shape == (3, 224, 224)


def test_criteria_and_data_set_names_have_one_torch_free_source() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import search.spec, models.names; "
        "assert 'torch' not in sys.modules, 'models.names / search.spec import torch'; "
        "print(search.spec.CRITERION_NAMES == models.names.CRITERION_NAMES)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
    from models.criteria import CRITERIA, DATA_CRITERIA
    from models.data import DATASETS
    from models.names import CRITERION_NAMES, DATASET_NAMES
    from models.names import DATA_CRITERIA as NAMED_DATA_CRITERIA

    assert CRITERIA is CRITERION_NAMES and DATASETS is DATASET_NAMES
    assert DATA_CRITERIA is NAMED_DATA_CRITERIA
    schema = JobSpec.model_json_schema()["$defs"]["PruningSettings"]["properties"]["criterion"]
    assert tuple(schema["enum"]) == CRITERION_NAMES
