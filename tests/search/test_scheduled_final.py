"""The final fine-tune along a pruning schedule delivers the plan's widths, as one_shot does."""

from __future__ import annotations

import optuna
import pytest

from models.io import load_pruned
from models.prune import output_channels, uniform_plan
from search import conclude_search, load_problem, open_study, run_search
from search.final import finalize
from search.lifecycle import ARTIFACT_NAMES
from tests.search.conftest import tiny_spec


def widths(model: object, names: list[str]) -> dict[str, int]:
    modules = dict(model.named_modules())  # type: ignore[attr-defined]
    return {name: output_channels(modules[name]) for name in names}


@pytest.mark.parametrize(
    "pruning",
    [
        {"schedule": "iterative", "schedule_steps": 2, "criteria": ["taylor", "fpgm"]},
        {"schedule": "adaptive", "schedule_steps": 3},
    ],
)
def test_a_scheduled_final_fine_tune_ends_at_the_plan(
    trained_weights: bytes, pruning: dict[str, object]
) -> None:
    spec = tiny_spec(pruning=pruning, budget={"flops": 0.5, "max_accuracy_drop": 0.2})
    problem = load_problem(spec, weights=trained_weights)
    plan = uniform_plan(problem.graph, 0.5)
    steps: list[tuple[int, int]] = []
    final = finalize(problem, plan, 0, on_step=lambda p: steps.append((p.step, p.total_steps)))

    assert widths(final.model, problem.graph.names) == dict(plan)
    assert final.schedule["name"] == pruning["schedule"]
    moves = final.schedule["moves"]
    assert moves[-1]["progress"] == 1.0 and len(moves) == pruning["schedule_steps"]
    if pruning["schedule"] == "iterative":
        assert [m["criterion"] for m in moves] == ["taylor", "fpgm"]
    else:
        assert len(final.schedule["decisions"]) == 3
    # progress runs over the whole fine-tune, not segment by segment
    total = final.lineage.steps
    assert [s for s, _ in steps] == list(range(1, total + 1))
    assert {t for _, t in steps} == {total}
    assert final.lineage.history[-1]["stage"] == "final"
    assert final.measured.test_accuracy > 0


def test_a_scheduled_job_delivers_the_same_artifacts(trained_weights: bytes) -> None:
    spec = tiny_spec(pruning={"schedule": "agp", "schedule_steps": 2})
    problem = load_problem(spec, weights=trained_weights)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=2)
    conclusion = conclude_search(problem, study.trials, storage="memory", study_name="s")
    assert conclusion.status == "succeeded" and conclusion.final is not None
    assert set(conclusion.artifacts) == set(ARTIFACT_NAMES)
    best = conclusion.report["best"]
    assert best["schedule"]["name"] == "agp"
    model, info = load_pruned(conclusion.artifacts["model.safetensors"])
    assert dict(info.plan) == best["plan"]
    assert widths(model, problem.graph.names) == best["plan"]
