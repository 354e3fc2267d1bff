"""The one job lifecycle: how a search ends, what it delivers, what it warns about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from search import (
    PruningProblem,
    conclude_search,
    load_problem,
    open_study,
    run_search,
    write_conclusion,
)
from search.lifecycle import ARTIFACT_NAMES, accuracy_warnings
from tests.search.conftest import tiny_spec


def _report(before: float, after: float) -> dict[str, Any]:
    return {"baseline": {"test_accuracy": before}, "best": {"test_accuracy": after}}


def test_a_search_without_a_feasible_trial_ends_with_the_reason(
    problem: PruningProblem, tmp_path: Path
) -> None:
    conclusion = conclude_search(problem, [], storage="memory", study_name="s")
    assert conclusion.status == "no_feasible_trial" and conclusion.final is None
    assert "none of the 0 trials met the budget" in (conclusion.message or "")
    assert conclusion.report["status"] == "no_feasible_trial" and conclusion.report["best"] is None
    assert set(write_conclusion(conclusion, tmp_path)) == {"report.json"}


def test_an_interrupted_search_is_reported_without_a_final_fine_tune(
    problem: PruningProblem, tmp_path: Path
) -> None:
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=2)
    conclusion = conclude_search(
        problem, study.trials, storage="memory", study_name="s", status="interrupted"
    )
    assert conclusion.status == "interrupted" and conclusion.final is None
    assert conclusion.report["best"] is None and len(conclusion.report["trials"]) == 2
    assert set(write_conclusion(conclusion, tmp_path)) == {"pareto.png", "report.json"}


def test_a_succeeded_search_delivers_every_artifact_and_its_final_history(
    problem: PruningProblem,
) -> None:
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=3)
    conclusion = conclude_search(
        problem, study.trials, storage="memory", study_name="s", job="job-1"
    )
    assert conclusion.status == "succeeded" and conclusion.final is not None
    assert set(conclusion.artifacts) == set(ARTIFACT_NAMES)
    assert all(conclusion.artifacts[name] for name in ARTIFACT_NAMES)
    best = conclusion.report["best"]
    assert best["search_val_accuracy"] is not None  # labelled apart from the final one
    assert {"finalize_s"} <= set(conclusion.report["timing"])
    assert conclusion.report["warnings"] == list(conclusion.warnings)


def test_a_large_accuracy_drop_is_named_with_what_to_change() -> None:
    problem = load_problem(tiny_spec(finetune={"final_epochs": 3}, budget={"flops": 0.125}))
    (warning,) = accuracy_warnings(problem, _report(0.81, 0.42))
    assert "81.00% to 42.00%" in warning and "39.0 points" in warning
    assert "finetune.final_epochs, now 3" in warning and "budget.flops (now 0.125)" in warning
    assert accuracy_warnings(problem, _report(0.81, 0.78)) == ()  # 3 points: fine


def test_an_allowed_accuracy_drop_is_the_threshold_when_set() -> None:
    problem = load_problem(tiny_spec(budget={"flops": 0.5, "max_accuracy_drop": 0.01}))
    (warning,) = accuracy_warnings(problem, _report(0.90, 0.88))
    assert "more than the allowed 1.0 points" in warning
    assert accuracy_warnings(problem, _report(0.90, 0.895)) == ()
