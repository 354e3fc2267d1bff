"""Latency where the job says: the meter seam, and ``latency.predictor: table``: the
search projects onto a latency budget with the device's layer table, trials record the
prediction, and what is delivered is confirmed end to end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
import pytest
import torch
from torch import nn

import search.latency_table
from models.cost import Latency, measure_cost, measure_latency, measure_onnx_latency
from models.io import onnx_model_bytes
from models.prune import uniform_plan
from search import (
    LatencyMeter,
    LatencySettings,
    LocalMeter,
    ParetoPoint,
    PruningProblem,
    conclude_search,
    load_problem,
    open_study,
    run_search,
)
from search.errors import SpecError
from search.latency_table import confirm_delivered
from search.problem import build_candidate
from tests.search.conftest import tiny_spec


def _latency(ms: float, where: str) -> Latency:
    return Latency(ms, ms, ms, ms, ms, "onnxruntime", 1, 1, 5, 1, where)


@dataclass
class CountingMeter:
    """A local meter that counts its calls and names itself ``bench``."""

    inner: LocalMeter
    where: str = "bench"
    channel_block: int | None = None
    models_measured: int = 0
    requests: int = 0
    slow_from_params: int | None = None  # models this large measure twice as slow

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        self.requests += 1
        self.models_measured += 1
        latency = self.inner.measure(model, onnx_bytes)
        params = sum(p.numel() for p in model.parameters())
        slow = self.slow_from_params is not None and params >= self.slow_from_params
        return replace(latency, median_ms=latency.median_ms * (2 if slow else 1), device=self.where)

    def measure_onnx(self, models: Sequence[bytes]) -> list[Latency]:
        self.requests += 1
        self.models_measured += len(models)
        return [replace(m, device=self.where) for m in self.inner.measure_onnx(models)]


def test_the_local_meter_measures_here_and_says_so() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    meter = LocalMeter(LatencySettings(repeats=5, warmup=1), (3, 16, 16), torch.device("cpu"))
    assert isinstance(meter, LatencyMeter)
    latency = meter.measure(model)
    assert latency.device == "local" and latency.median_ms > 0
    onnx = onnx_model_bytes(model, (3, 16, 16))
    (again,) = meter.measure_onnx([onnx])
    assert again.device == "local" and again.repeats == 5
    direct = measure_latency(model, (3, 16, 16), repeats=5, warmup=1)
    assert direct.device == "cpu"  # the models layer says what hardware; the meter where
    assert measure_onnx_latency(onnx, repeats=5, warmup=1).median_ms > 0


def test_a_device_target_needs_a_meter_that_reaches_it(trained_weights: bytes) -> None:
    spec = tiny_spec(budget={"flops": None, "latency_ms": 5.0}, latency={"target": "pi4"})
    with pytest.raises(SpecError, match="latency.target: device 'pi4' is reached"):
        load_problem(spec, weights=trained_weights)
    with pytest.raises(ValueError, match="a device agent times models with onnxruntime"):
        tiny_spec(latency={"target": "pi4", "backend": "torch"})


def _point(trial: int, ms: float, accuracy: float) -> ParetoPoint:
    return ParetoPoint(trial, accuracy, 100, 10, ms, True, {"g": trial}, latency_source="table")


def test_the_delivered_candidate_is_the_best_that_measures_within_budget(
    monkeypatch: pytest.MonkeyPatch, problem: PruningProblem
) -> None:
    measured = {1: 1.3, 2: 0.9, 3: 0.5}  # the table said every one fits a 1.0 ms budget
    monkeypatch.setattr(search.latency_table, "_measure_plan", lambda p, plan: measured[plan["g"]])
    budget = replace(problem.budget, max_latency_ms=1.0)
    job = replace(problem, budget=budget)
    ranked = [_point(1, 0.8, 0.9), _point(2, 0.7, 0.85), _point(3, 0.4, 0.8)]
    chosen, checks = confirm_delivered(job, ranked)
    assert chosen is not None and chosen.trial == 2  # 1 measured over the budget
    assert chosen.latency_ms == 0.9 and chosen.latency_source == "measured"
    assert [c["trial"] for c in checks] == [1, 2]
    # none within: the best is narrowed until it measures within the budget...
    measured.update({2: 1.2, 3: 1.1})
    narrowed = replace(ranked[0], plan={"g": 9}, latency_ms=0.95, latency_source="measured")
    asked: list[int] = []

    def narrow(p: Any, point: ParetoPoint, limit: float, checks: list[Any]) -> Any:
        asked.append(point.trial)
        return narrowed if limit == 1.0 else None

    monkeypatch.setattr(search.latency_table, "_narrow", narrow)
    chosen, checks = confirm_delivered(job, ranked)
    assert chosen is narrowed and asked == [1] and len(checks) == 3
    # ...and only if that fails, the fastest measured is delivered (the report warns)
    job = replace(problem, budget=replace(problem.budget, max_latency_ms=1.05))
    chosen, checks = confirm_delivered(job, ranked)
    assert chosen is not None and chosen.trial == 3 and chosen.latency_ms == 1.1


@pytest.mark.slow
def test_a_table_search_projects_onto_the_latency_budget_and_confirms_the_delivery(
    trained_weights: bytes,
) -> None:
    probe = load_problem(tiny_spec(), weights=trained_weights)
    unpruned = probe.measure_latency(probe.model).median_ms
    table = {"predictor": "table", "repeats": 20, "warmup": 3}
    # 0.8x the unpruned latency, unless this machine's table predicts even the smallest
    # plan above that (a CPU where layers this small cost mostly fixed overheads: seen
    # on an AMD EPYC VM); then half again the smallest plan's prediction, so the
    # budget is reachable on any machine without assuming how narrowing times here
    loose = load_problem(
        tiny_spec(budget={"flops": None, "latency_ms": 10 * unpruned}, latency=table),
        weights=trained_weights,
    )
    assert loose.space.latency is not None
    fastest = loose.space.latency(loose.space.smallest())
    spec = tiny_spec(
        budget={"flops": None, "latency_ms": max(0.8 * unpruned, 1.5 * fastest)},
        latency=table,
        search={"trials": 4, "seed": 0},
    )
    meters: list[CountingMeter] = []

    def make(settings: LatencySettings, shape: Any, device: torch.device) -> LatencyMeter:
        meters.append(CountingMeter(LocalMeter(settings, shape, device)))
        return meters[-1]

    problem = load_problem(spec, weights=trained_weights, meter_factory=make)
    (meter,) = meters
    assert problem.latency_table is not None
    # baseline, the layer shapes, the calibration models: three requests so far
    assert meter.requests == 3 and meter.models_measured > 3
    smallest = problem.space.smallest()
    assert problem.space.fits(smallest)  # the projection target is reachable
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=4)
    trials = study.get_trials(deepcopy=False)
    measured_before = meter.requests
    predicted = [t for t in trials if t.user_attrs.get("latency_source") == "table"]
    assert predicted and all(t.user_attrs["latency_device"] == "bench" for t in predicted)
    assert meter.requests == measured_before  # trials measured nothing
    conclusion = conclude_search(problem, trials, storage="memory", study_name="s")
    assert conclusion.status == "succeeded"
    check = conclusion.report["latency_check"]
    assert check["device"] == "bench" and check["delivered"] and check["front"]
    best = conclusion.report["best"]
    assert best["latency_device"] == "bench"
    within = best["latency_ms"] <= spec.budget.latency_ms  # type: ignore[operator]
    assert within or any("over budget.latency_ms" in w for w in conclusion.warnings)


@dataclass
class SyntheticDevice:
    """A device whose latency is a function of the model alone, so the narrowing logic is
    tested without timing anything: ``ms_per_mac`` × MACs, or ``slow_ms`` for the
    parameter counts listed in ``slow_params`` (the plans the search tried)."""

    ms_per_mac: float
    slow_ms: float
    slow_params: frozenset[int]
    where: str = "bench"
    channel_block: int | None = None

    def ms(self, model: nn.Module) -> float:
        params = sum(p.numel() for p in model.parameters())
        if params in self.slow_params:
            return self.slow_ms
        return self.ms_per_mac * measure_cost(model, (3, 16, 16)).macs

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        ms = self.ms(model)
        return Latency(ms, ms, ms, ms, ms, "onnxruntime", 1, 1, 1, 0, device=self.where)

    def measure_onnx(self, models: Sequence[bytes]) -> list[Latency]:
        raise AssertionError("the narrowing measures whole models only")


@dataclass(frozen=True)
class MacsTable:
    """A layer table whose prediction is ``ms_per_mac`` × the plan's analytic MACs."""

    problem: Any
    ms_per_mac: float

    def predict(self, plan: Any) -> float:
        return self.ms_per_mac * self.problem.cost.predict(plan).macs


def test_a_delivery_the_table_underestimated_is_narrowed_until_it_measures_within(
    trained_weights: bytes,
) -> None:
    spec = tiny_spec(
        budget={"flops": None, "latency_ms": 1.0},
        latency={"predictor": "table", "repeats": 3, "warmup": 1},
        search={"trials": 3, "seed": 0},
    )
    problem = load_problem(spec, weights=trained_weights)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=3)
    trials = study.get_trials(deepcopy=False)
    # on the device every plan the search tried is twice over budget, the table's
    # predictions say they fit, and anything narrower runs at 1 ms per unpruned model
    limit = 0.8
    per_mac = 1.0 / problem.baseline.cost.macs
    device = SyntheticDevice(
        per_mac,
        2 * limit,
        frozenset(t.user_attrs["params"] for t in trials if "params" in t.user_attrs),
    )
    budget = replace(problem.budget, max_latency_ms=limit)
    spec_at_limit = spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"latency_ms": limit})}
    )
    problem = replace(
        problem,
        spec=spec_at_limit,
        budget=budget,
        latency_meter=device,
        latency_table=MacsTable(problem, 0.5 * per_mac),  # underestimates by half
    )
    for trial in trials:  # what the table said at search time
        trial.user_attrs["latency_ms"] = 0.5 * limit

    conclusion = conclude_search(problem, trials, storage="memory", study_name="s")

    assert conclusion.status == "succeeded"
    checks = conclusion.report["latency_check"]["delivered"]
    assert any(c.get("reshaped") for c in checks)
    best = conclusion.report["best"]
    assert best["latency_ms"] <= limit
    assert not any("over budget.latency_ms" in w for w in conclusion.warnings)
    chosen = next(t for t in trials if t.number == best["trial"])
    assert best["plan"] != chosen.user_attrs["plan"]  # narrower than the trial it came from


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The models exported to ONNX from now on (``models.io.onnx_model_bytes``)."""
    import models.io

    exported: list[nn.Module] = []
    export = models.io.onnx_model_bytes

    def counted(model: nn.Module, input_shape: Sequence[int], **kwargs: Any) -> bytes:
        exported.append(model)
        return export(model, input_shape, **kwargs)

    monkeypatch.setattr(models.io, "onnx_model_bytes", counted)
    return exported


def test_candidates_are_timed_on_the_template_graph_not_a_fresh_export(
    trained_weights: bytes, exports: list[nn.Module]
) -> None:
    """Exporting every candidate costs more than timing it; the unpruned model's graph
    filled with the candidate's tensors is checked and timed instead."""
    spec = tiny_spec(budget={"latency_ms": 1000.0})  # the job times every candidate
    problem = load_problem(spec, weights=trained_weights)
    assert exports == [problem.model]  # the baseline's latency, when the job loads
    exports.clear()
    plan = uniform_plan(problem.graph, 0.5)
    candidate = build_candidate(problem, plan)
    latency = problem.measure_latency(candidate)
    assert latency.median_ms > 0 and latency.device == "local"
    assert exports == []
    assert problem.onnx_template is not None and problem.onnx_template.usable
    problem.measure_latency(problem.model)  # the unpruned model itself: exported as ever
    assert exports == [problem.model]


def test_a_local_meter_checks_the_template_graph_in_the_session_that_times_it(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    sessions: list[object] = []
    real = onnxruntime.InferenceSession

    def counted(*args: Any, **kwargs: Any) -> Any:
        sessions.append(args[1].graph_optimization_level)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counted)
    problem = load_problem(tiny_spec(budget={"latency_ms": 1000.0}), weights=trained_weights)
    template = problem.onnx_template
    assert template is not None
    checked: list[tuple[int, ...]] = []
    output_check = template.output_check

    def spied(model: nn.Module) -> Any:
        check = output_check(model)

        def spy(x: Any, output: Any) -> bool:
            checked.append(output.shape)
            return check(x, output)

        return spy

    monkeypatch.setattr(template, "output_check", spied)
    candidate = build_candidate(problem, uniform_plan(problem.graph, 0.5))
    sessions.clear()
    problem.measure_latency(candidate)
    assert checked == [(1, problem.data.num_classes)]  # the timed input's logits, checked
    # one session checks and times the graph, with every optimization, as latency is timed
    assert sessions == [onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL]
    assert template.usable


def test_only_a_meter_on_the_cpu_checks_graphs_in_its_own_session() -> None:
    settings = LatencySettings()
    assert LocalMeter(settings, (3, 8, 8), torch.device("cpu")).checks_outputs
    # a GPU's kernels (TF32 among them) differ from torch's on the CPU by more than the
    # check allows: there the template checks its graphs on the CPU, as before
    assert not LocalMeter(settings, (3, 8, 8), torch.device("cuda", 0)).checks_outputs


def test_a_template_graph_the_meter_refuses_retires_the_template(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch, exports: list[nn.Module]
) -> None:
    problem = load_problem(tiny_spec(budget={"latency_ms": 1000.0}), weights=trained_weights)
    template = problem.onnx_template
    assert template is not None
    monkeypatch.setattr(template, "output_check", lambda model: lambda x, out: False)
    exports.clear()  # the baseline's, when the job loaded
    candidate = build_candidate(problem, uniform_plan(problem.graph, 0.5))
    latency = problem.measure_latency(candidate)
    assert latency.median_ms > 0  # timed all the same, on its own export
    assert exports == [candidate]
    assert not template.usable


def test_no_template_is_made_without_onnxruntime_or_without_timed_candidates(
    trained_weights: bytes,
) -> None:
    timed_by_torch = tiny_spec(budget={"latency_ms": 1000.0}, latency={"backend": "torch"})
    assert load_problem(timed_by_torch, weights=trained_weights).onnx_template is None
    # only the delivered model is timed: one export costs less than making a template
    assert load_problem(tiny_spec(), weights=trained_weights).onnx_template is None
