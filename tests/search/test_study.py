"""The search end to end on a tiny job: samplers, objectives, budgets, seeds, resume."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from models.cost import measure_cost
from models.data import BatchSource
from models.io import load_pruned
from models.prune import Plan
from models.train import Evaluation, evaluate
from search import (
    PruningProblem,
    build_candidate,
    conclude_search,
    count_finished,
    dominance_screen,
    load_problem,
    objective,
    open_study,
    run_one_trial,
    run_search,
    select_best,
    write_conclusion,
)
from tests.search.conftest import tiny_spec


def _search(problem: PruningProblem, trials: int, storage: str | None = None) -> optuna.Study:
    study = open_study(problem, storage or optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=trials)
    return study


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2", "random", "qmc"])
def test_each_sampler_runs_within_the_budget(sampler: str, trained_weights: bytes) -> None:
    problem = load_problem(
        tiny_spec(search={"sampler": sampler, "trials": 5}), weights=trained_weights
    )
    study = _search(problem, 5)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == 5
    limit = problem.budget.max_macs
    assert limit is not None
    within = [t for t in done if t.user_attrs["macs"] <= limit]
    assert len(within) >= 0.9 * len(done)
    assert select_best(problem.spec, study.trials) is not None


@pytest.mark.parametrize(
    "objective,budget,values",
    [
        ("constrained", {"flops": 0.5}, 1),
        ("pareto", {}, 2),
        ("scalar", {"flops": 0.5}, 1),
        ("constrained", {"max_accuracy_drop": 0.5}, 1),
    ],
)
def test_each_objective_runs_end_to_end(
    objective: str, budget: dict[str, float], values: int, trained_weights: bytes
) -> None:
    spec = tiny_spec(objective=objective, budget={"flops": None, **budget}, latency=None)
    problem = load_problem(spec, weights=trained_weights)
    study = _search(problem, 4)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete and all(len(t.values) == values for t in complete)
    best = select_best(spec, study.trials)
    assert best is not None
    if budget.get("max_accuracy_drop"):
        assert study.directions == [optuna.study.StudyDirection.MINIMIZE]
        assert best.val_accuracy >= problem.baseline.val_accuracy - 0.5


def test_pareto_with_latency_has_three_objectives(trained_weights: bytes) -> None:
    spec = tiny_spec(
        objective="pareto",
        budget={"flops": None},
        latency={"backend": "torch", "repeats": 5, "warmup": 1},
    )
    assert spec.measures_latency
    study = _search(load_problem(spec, weights=trained_weights), 3)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert all(len(t.values) == 3 and t.user_attrs["latency_ms"] > 0 for t in complete)


def test_infeasible_plans_are_never_fine_tuned(trained_weights: bytes) -> None:
    spec = tiny_spec(budget={"flops": None, "latency_ms": 1e-6})
    problem = load_problem(spec, weights=trained_weights)
    study = _search(problem, 3)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    for t in trials:
        assert t.user_attrs["skipped"] == "infeasible"
        assert t.user_attrs["feasible"] is False and t.constraints["latency"] > 0
        stages = t.user_attrs["seconds"]
        assert "finetune" not in stages and "bn_recal" not in stages
    assert select_best(spec, study.trials) is None


def test_same_seed_same_search(trained_weights: bytes) -> None:
    runs = []
    for _ in range(2):
        problem = load_problem(tiny_spec(), weights=trained_weights)
        study = _search(problem, 4)
        runs.append([(t.user_attrs["plan"], t.values, t.state) for t in study.trials])
    assert runs[0] == runs[1]
    other = _search(load_problem(tiny_spec(search={"seed": 1}), weights=trained_weights), 4)
    assert [t.user_attrs["plan"] for t in other.trials] != [r[0] for r in runs[0]]


def test_a_job_without_weights_builds_the_same_model_on_every_worker() -> None:
    # random initialization follows the job's seed, not whatever the process drew before
    first = load_problem(tiny_spec()).model.state_dict()
    torch.rand(1000)  # another process, or another job, consumed the global generator
    state = torch.random.get_rng_state()
    second = load_problem(tiny_spec()).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # and it is left as it was
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = load_problem(tiny_spec(search={"seed": 1})).model.state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_first_trial_is_the_uniform_plan_at_the_budget(problem: PruningProblem) -> None:
    study = _search(problem, 1)
    first = study.trials[0]
    assert first.user_attrs["warm_start"] is True
    assert Plan(first.user_attrs["plan"]) == problem.space.uniform_at_budget()


def test_resume_continues_the_study(tmp_path: Path, trained_weights: bytes) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _search(load_problem(tiny_spec(), weights=trained_weights), 3, storage)
    before = [(t.number, t.user_attrs["plan"]) for t in first.trials]

    problem = load_problem(tiny_spec(search={"trials": 5}), weights=trained_weights)
    study = open_study(problem, storage)
    assert study.study_name == first.study_name and count_finished(study) == 3
    run_search(problem, study, trials=5)

    assert count_finished(study) == 5
    assert [(t.number, t.user_attrs["plan"]) for t in study.trials[:3]] == before
    assert sum(bool(t.user_attrs.get("warm_start")) for t in study.trials) == 1


def test_hopeless_trials_are_stopped_before_fine_tuning(
    problem: PruningProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the candidate's proxy is half what it measures: well above chance, far below the rest
    # (the trained tiny model may well score perfectly after recalibration itself)
    def halved(model: torch.nn.Module, data: BatchSource, **kwargs: Any) -> Evaluation:
        result = evaluate(model, data, **kwargs)
        return dataclasses.replace(result, top1=result.top1 / 2)

    monkeypatch.setattr("search.objective.evaluate", halved)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    for _ in study.get_trials(states=(TrialState.WAITING,)):
        study.tell(study.ask(), state=TrialState.FAIL)  # ask hands out the queued trial first
    dist = problem.space.distributions()
    for _ in range(12):  # earlier trials scored perfectly after BN recalibration
        study.add_trial(
            create_trial(
                params={n: d.high for n, d in dist.items()},
                distributions=dist,
                value=1.0,
                intermediate_values={0: 1.0},
                user_attrs={"plan": {}, "macs": 1, "params": 1},
            )
        )
    result = run_one_trial(problem, study)
    assert result is not None and result.skipped == "pruned"
    assert "finetune" not in result.seconds
    assert study.trials[-1].state == TrialState.PRUNED


def test_a_proxy_at_chance_is_no_reason_to_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    # every proxy counts as "at chance": the pruner must not judge the trial at step 0
    monkeypatch.setattr("search.objective._chance_level", lambda _problem: 1.0)
    problem = load_problem(tiny_spec())  # untrained: its proxy is far below the others'
    study = open_study(problem, optuna.storages.InMemoryStorage())
    for _ in study.get_trials(states=(TrialState.WAITING,)):
        study.tell(study.ask(), state=TrialState.FAIL)  # ask hands out the queued trial first
    dist = problem.space.distributions()
    for _ in range(12):  # earlier trials scored perfectly after BN recalibration
        study.add_trial(
            create_trial(
                params={n: d.high for n, d in dist.items()},
                distributions=dist,
                value=1.0,
                intermediate_values={0: 1.0},
                user_attrs={"plan": {}, "macs": 1, "params": 1},
            )
        )
    result = run_one_trial(problem, study)
    assert result is not None and result.skipped is None
    assert result.proxy_accuracy is not None and result.proxy_accuracy < 1.0
    assert result.seconds["finetune"] > 0 and result.val_accuracy is not None
    assert study.trials[-1].state == TrialState.COMPLETE


def test_pareto_screen_skips_only_clearly_dominated(problem: PruningProblem) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(
        create_trial(values=[0.9, 0.3], user_attrs={"proxy_accuracy": 0.8, "macs": 1000})
    )
    screen = dominance_screen(problem, study)
    assert screen(0.6, 2000, None)  # worse by 0.2 and bigger: skip
    assert not screen(0.78, 2000, None)  # within the margin: train it
    assert not screen(0.6, 500, None)  # smaller: it may be a new front point


def test_report_checkpoint_and_onnx_agree(tmp_path: Path, problem: PruningProblem) -> None:
    study = _search(problem, 4)
    best = select_best(problem.spec, study.trials)
    assert best is not None
    conclusion = conclude_search(
        problem, study.trials, storage="memory", study_name=study.study_name
    )
    assert conclusion.status == "succeeded" and conclusion.final is not None
    final, report = conclusion.final, conclusion.report
    written = write_conclusion(conclusion, tmp_path)

    assert set(written) == {"report.json", "model.safetensors", "model.onnx", "pareto.png"}
    for part in ("baseline", "best"):
        assert set(report[part]) >= {
            "macs",
            "params",
            "latency_ms",
            "val_accuracy",
            "test_accuracy",
        }
    assert report["best"]["trial"] == best.trial and report["best"]["plan"] == best.plan
    assert report["study"] == {"storage": "memory", "name": study.study_name}
    assert report["pareto"] and len(report["trials"]) == 4

    model, info = load_pruned(written["model.safetensors"])
    assert info.plan.to_dict() == {
        g.name: best.plan.get(g.name, g.channels) for g in problem.graph.groups
    }
    assert measure_cost(model, info.input_shape).macs == report["best"]["macs"]
    x = torch.randn(3, *info.input_shape)
    session = ort.InferenceSession(str(written["model.onnx"]), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(model(x).numpy(), final.model(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("exact", [True, False], ids=["predicted", "fvcore"])
def test_each_trial_records_the_cost_fvcore_counts(
    exact: bool, trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = load_problem(tiny_spec(), weights=trained_weights)
    assert problem.cost_is_exact  # every MAC of tiny_cnn lies in a layer the groups scale
    if not exact:  # as for a network running ops the analytic model cannot see
        problem.__dict__["cost_is_exact"] = False
    traced = []
    measure = objective.measure_candidate_cost
    monkeypatch.setattr(
        objective, "measure_candidate_cost", lambda *args: traced.append(1) or measure(*args)
    )
    study = open_study(problem, optuna.storages.InMemoryStorage())
    results = [run_one_trial(problem, study) for _ in range(3)]

    for result in results:
        assert result is not None
        counted = measure_cost(build_candidate(problem, result.plan), problem.input_shape)
        assert (result.macs, result.params, result.size_bytes) == (
            counted.macs,
            counted.params,
            counted.size_bytes,
        )
    assert len(traced) == (0 if exact else 3)


def test_a_trial_runs_with_the_older_objects_frozen(problem: PruningProblem) -> None:
    study = open_study(problem, optuna.storages.InMemoryStorage())
    older = [problem]  # tracked by the collector, alive before the trial
    during: list[bool] = []

    def on_ask(trial: optuna.Trial) -> None:
        during.append(any(obj is older for obj in gc.get_objects()))

    assert gc.get_freeze_count() == 0
    run_one_trial(problem, study, on_ask=on_ask)
    assert during == [False]  # frozen: out of the generations a collection walks
    assert gc.get_freeze_count() == 0 and any(obj is older for obj in gc.get_objects())

    def fail(trial: optuna.Trial) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run_one_trial(problem, study, on_ask=fail)
    assert gc.get_freeze_count() == 0  # unfrozen however the trial ends


def test_a_trial_leaves_a_heap_its_caller_froze_alone(problem: PruningProblem) -> None:
    study = open_study(problem, optuna.storages.InMemoryStorage())
    gc.freeze()
    try:
        newer = [problem]  # made after the caller's freeze: a trial must not freeze it
        during: list[bool] = []

        def on_ask(trial: optuna.Trial) -> None:
            during.append(any(obj is newer for obj in gc.get_objects()))

        run_one_trial(problem, study, on_ask=on_ask)
        assert during == [True]
        assert gc.get_freeze_count() > 0  # and the caller's freeze holds after it
    finally:
        gc.unfreeze()
