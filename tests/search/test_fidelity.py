"""compute_epochs: rungs that continue their own weights, spending no more than allowed."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from pydantic import ValidationError
from torch import nn

import search.rungs
from models.cost import Latency
from models.io import read_checkpoint_info, read_state_dict
from models.train import SoftTargets, evaluate, fine_tune, steps_per_epoch
from models.train._finetune import _stream
from search import (
    JobSpec,
    MemoryCheckpoints,
    PruningProblem,
    conclude_search,
    load_problem,
    open_study,
    optuna_storage,
    plan_fidelity,
    requeue_trial,
    run_one_trial,
    run_search,
)
from search.checkpoints import Lineage, restore_candidate
from search.fidelity import (
    ETA,
    MIN_FIRST_RUNG,
    REFERENCE_KINDS,
    TOP_ENTRANTS,
    FidelityPlan,
    compute_spent,
    promotable_by_rank,
)
from search.promotion import fresh_started
from search.rungs import envelope_lr, rung_steps, train_segment
from tests.search.conftest import tiny_spec

COMPUTE = 20.0


@pytest.fixture(scope="module", autouse=True)
def half_the_compute_to_the_winner() -> Any:
    """These tests exercise the rungs: half the compute to the delivered model leaves the
    tiny job room for every kind of promotion (the product's split is measured, and may
    change)."""
    import search.fidelity

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search.fidelity, "FINAL_SHARE", 0.5)
        yield


class RecordingCheckpoints(MemoryCheckpoints):
    """Keeps every checkpoint ever saved, by trial, oldest first."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[int, list[bytes]] = {}

    def save(self, trial: int, data: bytes) -> None:
        super().save(trial, data)
        self.saved.setdefault(trial, []).append(data)


def _without_trials(spec: JobSpec) -> JobSpec:
    """Return ``spec`` with ``search.trials`` unset (compute_epochs decides it)."""
    data = spec.to_json_dict()
    data["search"].pop("trials", None)
    return JobSpec.model_validate(data)


def _compute_spec(**overrides: Any) -> JobSpec:
    return _without_trials(tiny_spec(search={"compute_epochs": COMPUTE}, **overrides))


@pytest.fixture(scope="module")
def compute_problem(trained_weights: bytes) -> PruningProblem:
    return load_problem(_compute_spec(), weights=trained_weights)


@pytest.fixture(scope="module")
def searched(
    compute_problem: PruningProblem,
) -> tuple[optuna.Study, RecordingCheckpoints]:
    checkpoints = RecordingCheckpoints()
    study = open_study(compute_problem, optuna.storages.InMemoryStorage())
    fidelity = compute_problem.fidelity
    assert fidelity is not None
    run_search(compute_problem, study, trials=fidelity.trials, checkpoints=checkpoints)
    return study, checkpoints


def test_the_plan_spends_at_most_the_compute_and_contests_the_top_rung() -> None:
    def plan(epochs: float) -> FidelityPlan:
        fidelity = plan_fidelity(_without_trials(tiny_spec(search={"compute_epochs": epochs})))
        assert fidelity is not None
        return fidelity

    plans = [plan(e) for e in (2.0, 20.0, 80.0, 400.0)]
    for fidelity in plans:
        compute = fidelity.compute_epochs
        assert fidelity.final_epochs == pytest.approx(0.5 * compute)
        rungs = fidelity.rungs
        assert [r / rungs[0] for r in rungs] == pytest.approx([ETA**k for k in range(len(rungs))])
        # the top rung decides between candidates (the best third of each rung and the
        # baselines' plans, carried by right); the winner's rungs are its training
        top = fidelity.trials // ETA ** (len(rungs) - 1) + fidelity.references
        # uniform, global, sensitivity and (the search removes blocks by default) depth
        assert fidelity.references == len(REFERENCE_KINDS) == 4
        assert min(fidelity.trials, top) >= TOP_ENTRANTS
        assert rungs[-1] <= fidelity.final_epochs
        spent = fidelity.planned_epochs() + fidelity.final_epochs - rungs[-1]
        assert spent == pytest.approx(compute)
    # a tiny budget shortens the rungs rather than leave the top rung to one candidate
    assert plans[0].rungs[0] < MIN_FIRST_RUNG
    # more compute buys more candidates, and then more rungs, not only longer ones
    assert [p.rungs[0] >= MIN_FIRST_RUNG for p in plans[1:]] == [True] * 3
    assert [p.trials for p in plans] == sorted(p.trials for p in plans)
    assert plans[1].trials < plans[2].trials < plans[3].trials
    assert len(plans[1].rungs) == 2 and len(plans[3].rungs) == 3
    assert plan_fidelity(tiny_spec()) is None


def test_explicit_trials_get_longer_rungs_and_the_spec_round_trips() -> None:
    few = tiny_spec(search={"trials": 3, "compute_epochs": 20.0})
    plan = plan_fidelity(few)
    assert plan is not None and plan.trials == 3
    assert plan.rungs[-1] <= plan.final_epochs
    assert plan.planned_epochs() <= plan.search_epochs + 1e-9
    decided = _without_trials(tiny_spec(search={"compute_epochs": 20.0}))
    assert "trials" not in decided.to_json_dict()["search"]
    assert plan_fidelity(JobSpec.model_validate(decided.to_json_dict())) == plan_fidelity(decided)


def test_rank_promotion_keeps_the_front_and_drops_the_dominated() -> None:
    assert promotable_by_rank([-0.5, 100.0], [])  # the first of a rung goes on
    rivals = [[-0.9, 50.0], [-0.8, 60.0]]
    assert not promotable_by_rank([-0.7, 70.0], rivals)  # dominated by both
    assert promotable_by_rank([-0.95, 40.0], rivals)  # dominates both
    many = [[-0.9, 50.0], [-0.8, 60.0], [-0.6, 80.0], [-0.5, 90.0], [-0.4, 95.0]]
    # on the front but as accurate as the worst front member: within the best third?
    assert promotable_by_rank([-0.99, 100.0], many)  # rank 0, most accurate
    assert not promotable_by_rank([-0.45, 92.0], many)  # rank 1, low accuracy


def test_a_data_stream_continued_at_a_step_serves_the_next_batches(
    compute_problem: PruningProblem,
) -> None:
    train = compute_problem.data.train
    per_epoch = steps_per_epoch(len(train), 32)
    batches = functools.partial(train.batches, 32)
    n = len(train)
    whole = [labels for _, labels in _stream(batches, n, per_epoch, per_epoch + 5, seed=3)]
    tail = [labels for _, labels in _stream(batches, n, per_epoch, 7, seed=3, start=per_epoch - 2)]
    assert all(torch.equal(a, b) for a, b in zip(whole[per_epoch - 2 :], tail, strict=True))


def test_compute_spent_never_exceeds_compute_epochs(
    compute_problem: PruningProblem, searched: tuple[optuna.Study, RecordingCheckpoints]
) -> None:
    study, checkpoints = searched
    trials = study.get_trials(deepcopy=False)
    fidelity = compute_problem.fidelity
    assert fidelity is not None
    assert fresh_started(trials) == fidelity.trials
    assert compute_spent(trials) <= fidelity.search_epochs + 1e-9
    conclusion = conclude_search(
        compute_problem, trials, storage="mem", study_name="s", checkpoints=checkpoints
    )
    compute = conclusion.report["compute"]
    assert compute["epochs"] <= COMPUTE + 1e-6
    assert compute["epochs"] == pytest.approx(compute["trials_epochs"] + compute["final_epochs"])
    # what the search did not spend went to the winner
    per_epoch = steps_per_epoch(len(compute_problem.data.train), 32)
    assert COMPUTE - compute["epochs"] < 1 / per_epoch + 1e-6
    # the top rung was contested: the winner was chosen between candidates that reached it
    top = len(fidelity.rungs) - 1
    at_top = {
        t.user_attrs.get("candidate", t.number) for t in trials if t.user_attrs.get("rung") == top
    }
    assert len(at_top) >= 2
    # some candidates paused for good, some went on: they halved (late promotions:
    # test_a_paused_candidate_goes_on_once_later_entrants_rank_it_best)
    paused = [t for t in trials if t.user_attrs.get("skipped") == "paused"]
    promoted = [t for t in trials if (t.user_attrs.get("rung") or 0) >= 1]
    assert paused and promoted


def test_rung_candidates_are_judged_by_their_first_rung_not_a_proxy(
    searched: tuple[optuna.Study, RecordingCheckpoints],
) -> None:
    # no BN recalibration and no extra pass over the val split before a first rung
    study, _ = searched
    trained = [t for t in study.get_trials(deepcopy=False) if "seconds" in t.user_attrs]
    assert trained
    for t in trained:
        assert t.user_attrs.get("proxy_accuracy") is None
        assert "bn_recal" not in t.user_attrs["seconds"]
    fresh = [t for t in trained if t.user_attrs.get("resume_of") is None]
    assert any("finetune" in t.user_attrs["seconds"] for t in fresh)


def test_a_rung_too_short_to_forget_the_unpruned_statistics_is_judged_on_its_last_batchs(
    compute_problem: PruningProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends, _ = rung_steps(compute_problem, compute_problem.fidelity)  # type: ignore[arg-type]
    assert 0.9 ** ends[-1] > search.rungs.STALE_BN_SHARE  # both of the tiny job's rungs
    flags: list[bool] = []

    def segment(*args: Any, last_batch_statistics: bool = False, **kwargs: Any) -> None:
        flags.append(last_batch_statistics)
        train_segment(*args, last_batch_statistics=last_batch_statistics, **kwargs)

    monkeypatch.setattr(search.rungs, "train_segment", segment)
    checkpoints = RecordingCheckpoints()
    study = open_study(compute_problem, optuna.storages.InMemoryStorage())
    run_one_trial(compute_problem, study, checkpoints=checkpoints)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    accuracies = trial.user_attrs["rung_accuracy"]
    assert len(accuracies) == len(ends) and flags == [True] * len(ends)
    # the candidate keeps the statistics its rung was judged on: a checkpoint scores what
    # its rung recorded
    for saved, accuracy in zip(checkpoints.saved[trial.number], accuracies, strict=True):
        model, _, _ = restore_candidate(compute_problem, saved)
        assert evaluate(model, compute_problem.data.val).top1 == accuracy

    # once the running averages have forgotten enough, they are what a rung is judged on
    flags.clear()
    monkeypatch.setattr(search.rungs, "STALE_BN_SHARE", 1.0)
    study = open_study(compute_problem, optuna.storages.InMemoryStorage())
    run_one_trial(compute_problem, study, checkpoints=MemoryCheckpoints())
    assert flags == [False] * len(ends)


def test_a_promoted_candidate_continues_its_own_weights_and_steps(
    compute_problem: PruningProblem, searched: tuple[optuna.Study, RecordingCheckpoints]
) -> None:
    study, checkpoints = searched
    trial = next(t for t in study.trials if len(checkpoints.saved.get(t.number, [])) >= 2)
    first, second = checkpoints.saved[trial.number][:2]
    model, _, before = restore_candidate(compute_problem, first)
    _, _, after = restore_candidate(compute_problem, second)
    ends, horizon = rung_steps(compute_problem, compute_problem.fidelity)  # type: ignore[arg-type]
    assert before.steps == ends[0] and after.steps == ends[1]
    assert after.history[:1] == before.history
    assert after.history[1]["steps"] == [ends[0], ends[1]]
    # replaying the second rung from the first rung's weights gives its weights exactly:
    # it continued them (a restart from the pruned model would not match), distilling
    # the teacher's logits computed once
    seed = compute_problem.spec.search.seed * 100_003 + trial.number
    fine_tune(
        model,
        compute_problem.data.train,
        steps=ends[1] - ends[0],
        lr=envelope_lr(compute_problem.spec.finetune.lr, ends[0], horizon),
        batch_size=32,
        seed=seed,
        start_step=ends[0],
        teacher=compute_problem.soft_targets,  # rungs distill by default
        last_batch_statistics=True,  # a rung this short is judged on its last batch's
    )
    stored = read_state_dict(second)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, stored[name]), name
    _, _, last = restore_candidate(compute_problem, checkpoints.saved[trial.number][-1])
    assert trial.user_attrs["epochs_trained"] == pytest.approx(last.epochs)
    # one val accuracy and one val loss per rung it trained
    rungs = len(checkpoints.saved[trial.number])
    assert len(trial.user_attrs["rung_accuracy"]) == len(trial.user_attrs["rung_loss"]) == rungs
    assert all(loss > 0 for loss in trial.user_attrs["rung_loss"])


def test_the_delivered_model_is_the_winner_trained_on(
    compute_problem: PruningProblem, searched: tuple[optuna.Study, RecordingCheckpoints]
) -> None:
    study, checkpoints = searched
    trials = study.get_trials(deepcopy=False)
    conclusion = conclude_search(
        compute_problem, trials, storage="mem", study_name="s", checkpoints=checkpoints
    )
    assert conclusion.status == "succeeded"
    best = conclusion.report["best"]
    winner = study.trials[best["trial"]]
    assert winner.state == TrialState.COMPLETE
    assert conclusion.report["compute"]["final_from_trial"] == best["trial"]
    _, _, trained = restore_candidate(compute_problem, checkpoints.load(best["trial"]) or b"")
    history = best["training_history"]
    assert history[: len(trained.history)] == list(trained.history)
    assert history[-1]["stage"] == "final" and history[-1]["steps"][0] == trained.steps
    # the downloadable checkpoint carries the same history
    info = read_checkpoint_info(conclusion.artifacts["model.safetensors"])
    assert Lineage.from_json(info.extra["lineage"]).history == tuple(history)


def test_pareto_rungs_promote_by_non_dominated_rank(trained_weights: bytes) -> None:
    from search.promotion import Entry, is_promotable

    spec = _compute_spec(objective="pareto", budget=None)
    fidelity = plan_fidelity(spec)
    assert fidelity is not None
    # accuracy against MACs: the rank decides, not accuracy alone
    entries = {
        0: Entry(0, 0, accuracy=0.90, macs=50, latency_ms=1.0, score=None),
        1: Entry(1, 1, accuracy=0.60, macs=10, latency_ms=1.0, score=None),  # small: front
        2: Entry(2, 2, accuracy=0.55, macs=60, latency_ms=1.0, score=None),  # dominated
        3: Entry(3, 3, accuracy=0.50, macs=70, latency_ms=1.0, score=None),  # dominated
        4: Entry(4, 4, accuracy=0.40, macs=80, latency_ms=1.0, score=None),  # dominated
        5: Entry(5, 5, accuracy=0.30, macs=90, latency_ms=1.0, score=None),  # dominated
    }
    assert is_promotable(spec, fidelity, entries, 0)
    assert is_promotable(spec, fidelity, entries, 1)  # on the front, though less accurate
    assert not is_promotable(spec, fidelity, entries, 2)
    # a single objective ranks by value: the best third of six is the two most accurate
    single = _compute_spec()
    assert is_promotable(single, fidelity, entries, 1)
    assert not is_promotable(single, fidelity, entries, 2)
    # fewer than eta entrants promote nobody yet: the candidate pauses
    assert not is_promotable(spec, fidelity, {0: entries[0], 1: entries[1]}, 0)
    # end to end: a pareto rung search finishes within its compute with a top rung
    problem = load_problem(spec, weights=trained_weights)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=fidelity.trials, checkpoints=MemoryCheckpoints())
    trials = study.get_trials(deepcopy=False)
    assert compute_spent(trials) <= fidelity.search_epochs + 1e-9
    assert any(t.state == TrialState.COMPLETE for t in trials)
    # the rank decides, not the BN-recalibrated proxy's dominance screen
    assert all(t.user_attrs.get("proxy_accuracy") is None for t in trials)
    assert not any(t.user_attrs.get("skipped") == "dominated" for t in trials)


@dataclass
class ParamsMeter:
    """A meter whose latency is the model's parameter count in microseconds: promotion
    by rank must not depend on this machine's timings. Counts the models it measured."""

    where: str = "bench"
    channel_block: int | None = None
    measured: int = 0

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        self.measured += 1
        ms = 1e-3 * sum(p.numel() for p in model.parameters())
        return Latency(ms, ms, ms, ms, 1.1 * ms, "onnxruntime", 1, 1, 5, 1, self.where)

    def measure_onnx(self, models: Any) -> list[Latency]:
        raise AssertionError("no layer table here")


def test_a_continuation_carries_its_origins_cost_and_latency_over(trained_weights: bytes) -> None:
    # the same structure: fvcore and the latency meter would only say it again
    from search.objective import run_trial
    from search.promotion import continuation_attrs

    spec = _compute_spec(budget={"flops": 0.5, "latency_ms": 1e6})
    meter = ParamsMeter()
    problem = load_problem(spec, weights=trained_weights, meter_factory=lambda *_: meter)
    assert spec.measures_latency
    study = open_study(problem, optuna.storages.InMemoryStorage())
    fidelity = problem.fidelity
    assert fidelity is not None
    checkpoints = MemoryCheckpoints()
    before = meter.measured
    run_search(problem, study, trials=fidelity.trials, checkpoints=checkpoints)
    trials = study.get_trials(deepcopy=False)
    assert meter.measured - before == len(trials)  # one measurement per candidate
    paused = next(t for t in trials if t.user_attrs.get("skipped") == "paused")
    study.enqueue_trial(paused.params, user_attrs=continuation_attrs(paused, paused.number))
    trial = study.ask()
    before = meter.measured
    result, _ = run_trial(problem, trial, checkpoints=checkpoints)
    assert meter.measured == before  # measured nothing
    assert result.rung == 1  # it did go on from its checkpoint
    for key in ("macs", "params", "size_bytes", "latency_ms", "latency_p90_ms"):
        assert trial.user_attrs[key] == paused.user_attrs[key], key
    assert trial.user_attrs["latency_source"] == "measured"
    assert trial.user_attrs["latency_device"] == "bench"


class WorkerKilled(Exception):
    """Stands for SIGKILL: the trial ends mid-rung without any cleanup."""


def test_a_trial_lost_mid_rung_resumes_from_its_last_rung(trained_weights: bytes) -> None:
    problem = load_problem(_compute_spec(), weights=trained_weights)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    checkpoints = RecordingCheckpoints()
    ends, _ = rung_steps(problem, problem.fidelity)  # type: ignore[arg-type]
    per_epoch = steps_per_epoch(len(problem.data.train), 32)

    def killer() -> Callable[[], bool]:
        polls = {"n": 0}

        def kill_in_second_rung() -> bool:  # polled once per training step
            polls["n"] += 1
            if polls["n"] > ends[0] + 2:
                raise WorkerKilled
            return False

        return kill_in_second_rung

    # candidates run until the first that goes on to the second rung dies two steps in
    for _ in range(2 * problem.fidelity.trials):  # type: ignore[union-attr]
        try:
            run_one_trial(problem, study, should_stop=killer(), checkpoints=checkpoints)
        except WorkerKilled:
            break
    else:
        pytest.fail("no candidate entered the second rung")
    lost = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert lost.user_attrs["rung"] == 0
    origin = int(lost.user_attrs.get("resume_of", lost.number))
    candidate = int(lost.user_attrs.get("candidate", lost.number))
    spent_before = compute_spent(study.get_trials(deepcopy=False))
    assert requeue_trial(study, lost, max_attempts=3)

    def resumed_done() -> bool:
        return any(
            t.user_attrs.get("resume_of") in (lost.number, origin)
            and t.number > lost.number
            and t.state.is_finished()
            for t in study.trials
        )

    result = None
    while not resumed_done():
        result = run_one_trial(problem, study, checkpoints=checkpoints)
    assert result is not None
    resumed = next(
        t
        for t in study.trials
        if t.user_attrs.get("resume_of") in (lost.number, origin) and t.number > lost.number
    )
    assert resumed.user_attrs["candidate"] == candidate
    saved = checkpoints.saved[resumed.number][0]  # its first rung: the second of the candidate
    _, _, lineage = restore_candidate(problem, saved)
    # the first rung is the candidate's own, kept; only the second was trained again
    assert [h["trial"] for h in lineage.history] == [candidate, resumed.number]
    assert lineage.steps == ends[1]
    own = resumed.user_attrs["epochs_trained"]
    assert own == pytest.approx((ends[1] - ends[0]) / per_epoch, abs=1e-5)  # not rung 0 again
    # the lost trial's finished rung stays counted as spent (a fresh candidate's), not redone
    assert compute_spent(study.get_trials(deepcopy=False)) >= spent_before + own - 1e-6


def test_report_json_lists_rungs_per_trial(
    compute_problem: PruningProblem, searched: tuple[optuna.Study, RecordingCheckpoints]
) -> None:
    study, checkpoints = searched
    conclusion = conclude_search(
        compute_problem,
        study.get_trials(deepcopy=False),
        storage="mem",
        study_name="s",
        checkpoints=checkpoints,
    )
    rows = conclusion.report["trials"]
    assert all(r["rung"] is not None and r["epochs_trained"] > 0 for r in rows)
    assert json.loads(json.dumps(conclusion.report["compute"]))["fidelity"]["eta"] == ETA


def test_distillation_defines_a_compute_search_but_not_a_classic_one() -> None:
    # with rungs the teacher trains every candidate: another search, another study
    taught, plain = _compute_spec(), _compute_spec(finetune={"distill": False})
    assert taught.distills and not plain.distills  # on by default with compute_epochs
    assert plain.study_name() != taught.study_name()
    assert _compute_spec(finetune={"distill": True}).study_name() == taught.study_name()
    # without, it changes only the final fine-tune: the same study resumes
    assert not tiny_spec().distills
    assert tiny_spec().study_name() == tiny_spec(finetune={"distill": True}).study_name()


def test_the_distillation_loss_settings_define_a_distilling_search_only() -> None:
    taught = _compute_spec()
    hotter = _compute_spec(finetune={"distill_temperature": 2.0})
    heavier = _compute_spec(finetune={"distill_weight": 0.9})
    names = {s.study_name() for s in (taught, hotter, heavier)}
    assert len(names) == 3  # another loss trains other candidates: another study
    # the defaults spelled out name the study that predates the settings
    spelled = _compute_spec(finetune={"distill_weight": 0.5, "distill_temperature": 4.0})
    assert spelled.study_name() == taught.study_name()
    # where nothing distills, or only the final fine-tune does, they change no search
    plain = _compute_spec(finetune={"distill": False})
    plain_heavier = _compute_spec(finetune={"distill": False, "distill_weight": 0.9})
    assert plain_heavier.study_name() == plain.study_name()
    assert tiny_spec(finetune={"distill_weight": 0.9}).study_name() == tiny_spec().study_name()


@pytest.mark.parametrize(
    "finetune",
    [{"distill_weight": -0.1}, {"distill_weight": 1.5}, {"distill_temperature": 0.0}],
)
def test_the_distillation_loss_settings_are_checked(finetune: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="distill_"):
        _compute_spec(finetune=finetune)


def test_rungs_distill_the_unpruned_models_logits_computed_once(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    taught = load_problem(_compute_spec(), weights=trained_weights)
    plain = load_problem(_compute_spec(finetune={"distill": False}), weights=trained_weights)
    passes: list[int] = []
    teachers: list[object] = []
    computed = SoftTargets.of

    def counted(teacher: torch.nn.Module, split: object, **kw: Any) -> SoftTargets | None:
        passes.append(len(split))  # type: ignore[arg-type]
        return computed(teacher, split, **kw)

    def trained(*args: Any, **kw: Any) -> Any:
        teachers.append(kw["teacher"])
        return fine_tune(*args, **kw)

    monkeypatch.setattr(SoftTargets, "of", staticmethod(counted))
    monkeypatch.setattr(search.rungs, "fine_tune", trained)
    results = []
    for problem in (plain, taught):
        study = open_study(problem, optuna.storages.InMemoryStorage())
        checkpoints = MemoryCheckpoints()
        run_one_trial(problem, study, checkpoints=checkpoints)
        run_one_trial(problem, study, checkpoints=checkpoints)
        results.append(read_state_dict(checkpoints.load(0) or b""))
    # same plan, seed and data: only the loss differs, so the weights do
    assert results[0].keys() == results[1].keys()
    assert any(not torch.equal(results[0][k], results[1][k]) for k in results[0])
    # one teacher pass over the training split served both candidates of the taught job
    assert passes == [len(taught.data.train)]
    half = len(teachers) // 2  # the plain job's rungs, then the taught job's
    assert half > 0 and teachers[:half] == [None] * half
    assert all(t is taught.soft_targets for t in teachers[half:])


def test_rungs_train_with_the_specs_distillation_loss(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _compute_spec(finetune={"distill_weight": 0.9, "distill_temperature": 2.0})
    problem = load_problem(spec, weights=trained_weights)
    losses: list[tuple[float, float]] = []

    def trained(*args: Any, **kw: Any) -> Any:
        losses.append((kw["distill_weight"], kw["temperature"]))
        return fine_tune(*args, **kw)

    monkeypatch.setattr(search.rungs, "fine_tune", trained)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_one_trial(problem, study, checkpoints=MemoryCheckpoints())
    assert losses and set(losses) == {(0.9, 2.0)}


def test_a_warm_start_goes_on_where_a_candidate_as_poor_pauses(
    compute_problem: PruningProblem,
) -> None:
    from search.continuation import RungPromoter

    study = optuna.create_study(direction="maximize")
    for accuracy in (0.9, 0.5):  # two earlier entrants of the first rung
        rival = study.ask()
        rival.set_user_attr("macs", 100)
        rival.set_user_attr("rung_accuracy", [accuracy])
    poor = study.ask()
    poor.set_user_attr("macs", 100)
    poor.set_user_attr("rung_accuracy", [0.1])
    assert not RungPromoter(compute_problem, poor, 100, None)(0, 0.1, 0.1)  # pauses
    reference = study.ask()
    reference.set_user_attr("macs", 100)
    reference.set_user_attr("warm_start", True)  # a baseline's own plan
    reference.set_user_attr("rung_accuracy", [0.1])
    promote = RungPromoter(compute_problem, reference, 100, None)
    assert promote(0, 0.1, 0.1)  # goes on by right
    assert not promote(0, 0.1, 1e6)  # unless the compute left cannot pay for its next rung


def test_a_paused_candidate_goes_on_once_later_entrants_rank_it_best(
    compute_problem: PruningProblem,
) -> None:
    from search.promotion import promote_paused

    fidelity = compute_problem.fidelity
    assert fidelity is not None
    study = optuna.create_study(direction="maximize")
    for accuracy in (0.9, 0.5, 0.4):  # the first paused alone; the later two rank it
        trial = study.ask()
        compute_problem.space.suggest(trial)
        for key, value in {
            "macs": 100,
            "rung": 0,
            "rung_accuracy": [accuracy],
            "skipped": "paused",
            "epochs_trained": fidelity.rungs[0],
        }.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.PRUNED)
    assert promote_paused(compute_problem.spec, fidelity, study) == 1
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.user_attrs["resume_of"] for t in queued] == [0]
    assert queued[0].user_attrs["candidate"] == 0
    assert queued[0].system_attrs["fixed_params"] == study.trials[0].params  # the same plan
    assert promote_paused(compute_problem.spec, fidelity, study) == 0  # queued once


def test_without_a_top_rung_candidate_the_best_paused_one_is_delivered(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import search.continuation
    import search.promotion
    import search.rungs

    real = search.promotion.affordable

    def first_rungs_only(trials: Any, fidelity: FidelityPlan, epochs: float) -> bool:
        # a compute budget that pays for first rungs only (as tiny budgets did once)
        return epochs <= fidelity.rungs[0] + 1e-9 and real(trials, fidelity, epochs)

    for module in (search.rungs, search.continuation, search.promotion):
        monkeypatch.setattr(module, "affordable", first_rungs_only)
    spec = _without_trials(tiny_spec(search={"compute_epochs": 3.0}))
    problem = load_problem(spec, weights=trained_weights)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    checkpoints = MemoryCheckpoints()
    fidelity = problem.fidelity
    assert fidelity is not None
    run_search(problem, study, trials=fidelity.trials, checkpoints=checkpoints)
    trials = study.get_trials(deepcopy=False)
    assert not any(t.state == TrialState.COMPLETE for t in trials), "a top rung was reached"
    conclusion = conclude_search(
        problem, trials, storage="mem", study_name="s", checkpoints=checkpoints
    )
    assert conclusion.status == "succeeded"
    chosen = study.trials[conclusion.report["best"]["trial"]]
    assert chosen.user_attrs["skipped"] == "paused"
    assert conclusion.report["compute"]["final_from_trial"] == chosen.number
    highest = max(t.user_attrs.get("rung") or 0 for t in trials)
    assert chosen.user_attrs["rung"] == highest
    assert conclusion.report["compute"]["epochs"] <= 3.0 + 1e-6


def test_a_continuation_whose_checkpoint_is_gone_starts_afresh_with_its_own_rungs(
    compute_problem: PruningProblem,
) -> None:
    study = optuna.create_study(direction="maximize")  # no warm starts queued ahead
    lost = study.ask()
    compute_problem.space.suggest(lost)
    study.tell(lost, state=TrialState.FAIL)
    study.enqueue_trial(
        study.trials[0].params,
        user_attrs={"resume_of": 0, "candidate": 0, "rung_accuracy": [-1.0, -1.0]},
    )
    checkpoints = RecordingCheckpoints()  # holds nothing of trial 0
    result = run_one_trial(compute_problem, study, checkpoints=checkpoints)
    assert result is not None
    again = study.trials[result.number]
    assert again.user_attrs.get("resume_of") == 0
    # the carried accuracies (impossible values here) were not kept: its rungs are its own
    assert all(a >= 0 for a in again.user_attrs["rung_accuracy"])
    _, _, lineage = restore_candidate(compute_problem, checkpoints.load(again.number) or b"")
    assert lineage.history[0]["trial"] == again.number and lineage.history[0]["steps"][0] == 0


def test_a_trial_writes_an_attribute_again_only_when_its_value_changed(
    compute_problem: PruningProblem,
) -> None:
    # every write is a commit to the shared store: the result record must not repeat
    # what the trial wrote while it ran (its MACs and latency for rivals, its rung)
    writes: list[tuple[str, Any]] = []

    class CountingStorage(optuna.storages.InMemoryStorage):
        def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
            writes.append((key, value))
            super().set_trial_user_attr(trial_id, key, value)

    study = open_study(compute_problem, CountingStorage())
    result = run_one_trial(compute_problem, study, checkpoints=MemoryCheckpoints())
    assert result is not None and result.rung is not None
    repeated = [key for i, (key, value) in enumerate(writes) if (key, value) in writes[:i]]
    assert repeated == []
    keys = [key for key, _ in writes]
    assert keys.count("macs") == 1 and keys.count("rung") == result.rung + 1
    assert set(result.user_attrs()) <= set(keys)  # everything recorded once
    # the analytic MACs are stored only where fvcore corrected them
    assert ("macs_predicted" in keys) == (result.macs_predicted != result.macs)


def test_a_rungs_results_and_score_are_written_together(
    compute_problem: PruningProblem, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from search.storage import write_user_attrs

    writes: list[list[str]] = []

    def recorded(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        writes.append(sorted(attrs))
        write_user_attrs(trial, attrs)

    monkeypatch.setattr(search.rungs, "write_user_attrs", recorded)
    storage = optuna_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = open_study(compute_problem, storage)
    run_one_trial(compute_problem, study, checkpoints=MemoryCheckpoints())

    (trial,) = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    rungs = len(trial.user_attrs["rung_accuracy"])
    assert rungs >= 2  # the first candidate, a reference, goes on by right
    together = sorted(["rung", "rung_accuracy", "rung_loss", "epochs_trained", "rung_score"])
    assert writes == [together] * rungs  # one transaction per rung, the score with it
    assert len(trial.user_attrs["rung_score"]) == rungs
    fidelity = compute_problem.fidelity
    assert fidelity is not None and rungs == len(fidelity.rungs)  # it reached the top
    # and was reported to Optuna at every rung its promotion was judged: all below the top
    assert list(trial.intermediate_values) == [fidelity.report_step(r) for r in range(rungs - 1)]
