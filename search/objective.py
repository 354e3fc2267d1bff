"""One trial: plan → prune → BN recalibration → brief fine-tune → measure → score.

The order puts every cheap way to give up before the expensive fine-tune: the plan is
projected onto the budget analytically (and its cost is that prediction where the
analytic model is exact for the network, :attr:`PruningProblem.cost_is_exact`; fvcore
otherwise); latency (which depends only on the structure) is measured before any
training and an over-budget candidate stops there; the accuracy after BatchNorm
recalibration alone is reported to the pruner (single objective) or screened against the
front (pareto) before fine-tuning.

With ``search.compute_epochs`` there is no such proxy: a candidate's first rung is its
cheap signal (it ranks plans as their last rung does, Spearman 0.64-0.72 on resnet56
against 0.11 for the recalibrated accuracy, ``search_quality_compute_resnet56.md``), and
the recalibration and the extra pass over the validation split would cost about 15 % of
that rung there (1,928 images forwarded against 4,284 trained) for nothing the
promotion uses.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from torch import nn

from models.prune import Plan
from models.train import evaluate, fine_tune, recalibrate_batchnorm
from search.checkpoints import CheckpointStore, Lineage, MemoryCheckpoints
from search.continuation import RungPromoter, inherited_measurements, resumed_candidate
from search.hybrid import measure_candidate_cost, sparse_record, zeros_held
from search.problem import PruningProblem, build_candidate
from search.rungs import train_rungs
from search.scores import objective_values
from search.space import study_floors
from search.spec import directions
from search.storage import write_user_attrs

__all__ = [
    "SCREEN_MARGIN",
    "TrialResult",
    "build_candidate",
    "run_trial",
]

logger = logging.getLogger(__name__)

SCREEN_MARGIN = 0.05
"""A pareto candidate is skipped when a finished trial no bigger than it was at least this
much more accurate after BN recalibration alone."""

BN_BATCHES = 1
"""Batches of 64 training images forwarded to re-estimate a classic trial's candidate's
BatchNorm statistics before its proxy accuracy is taken (a rung search computes no
proxy). ``benchmarks/bn_recal.py`` measured 1 to 16 batches of 64 on resnet20_cifar: one
batch ranks plans as 16 do (Spearman ≥ 0.95), as well against the fine-tuned accuracy
as 2 batches (within 0.03), and the fine-tune that starts from it ends within 0.06
points of one that starts from 8 batches, at 0.03 s instead of 0.05 (2 batches) or 0.2
(8): a tenth of a 10-step fine-tune."""


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured; also written to the trial's user attributes.

    Attributes:
        number: Optuna trial number.
        plan: channels kept per group (after projection onto the budget).
        macs, params, size_bytes: measured on the pruned model (fvcore for MACs).
        macs_predicted: the analytic model's MACs for the plan (stored on the trial
            only where they differ from ``macs``: a cost model fvcore corrects).
        latency_ms, latency_p90_ms: median and p90 latency, when measured.
        proxy_accuracy: validation accuracy after BN recalibration, before fine-tuning
            (None with ``search.compute_epochs``: rungs compute no proxy).
        val_accuracy: validation accuracy after fine-tuning (None if skipped).
        constraints: Optuna constraint values (feasible when all <= 0).
        skipped: why the fine-tune was skipped or cut short (``infeasible``, ``pruned``,
            ``dominated``; with rungs ``paused``, not among the best of its rung, or
            ``budget``, no compute left for its next rung), or None.
        values: the objective values told to Optuna (None for a pruned trial).
        seconds: wall-clock seconds per stage.
        rung: with rungs, the last rung the candidate finished (``val_accuracy`` is
            its accuracy there); None without.
        epochs: epochs the candidate trained since pruning, earlier trials of a resumed
            candidate included.
    """

    number: int
    plan: Plan
    macs: int
    params: int
    size_bytes: int
    macs_predicted: int
    latency_ms: float | None
    latency_p90_ms: float | None
    proxy_accuracy: float | None
    val_accuracy: float | None
    constraints: dict[str, float]
    skipped: str | None
    values: tuple[float, ...] | None
    seconds: dict[str, float] = field(default_factory=dict)
    rung: int | None = None
    epochs: float | None = None

    @property
    def feasible(self) -> bool:
        """True if every constraint is met."""
        return all(v <= 0 for v in self.constraints.values())

    @property
    def state(self) -> TrialState:
        """The state to tell Optuna."""
        return TrialState.PRUNED if self.values is None else TrialState.COMPLETE

    def user_attrs(self) -> dict[str, Any]:
        """Return the JSON-safe user attributes stored on the trial (nothing that
        repeats another: each is a row of the study's storage)."""
        predicted = (
            {} if self.macs_predicted == self.macs else {"macs_predicted": self.macs_predicted}
        )
        return {
            "plan": self.plan.to_dict(),
            "macs": self.macs,
            "params": self.params,
            "size_bytes": self.size_bytes,
            **predicted,
            "latency_ms": self.latency_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "proxy_accuracy": self.proxy_accuracy,
            "val_accuracy": self.val_accuracy,
            "feasible": self.feasible,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "rung": self.rung,
            "epochs": self.epochs,
        }


def _chance_level(problem: PruningProblem) -> float:
    """Return the validation accuracy a guess reaches, plus two validation images."""
    return 1 / problem.data.num_classes + 2 / max(1, len(problem.data.val))


Screen = Callable[[float, int, float | None], bool]
"""``screen(proxy_accuracy, macs, latency_ms)`` → True to skip the fine-tune."""


def run_trial(
    problem: PruningProblem,
    trial: optuna.Trial,
    *,
    screen: Screen | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointStore | None = None,
) -> tuple[TrialResult, nn.Module | None]:
    """Evaluate one candidate for ``trial`` and record it on the trial.

    Sets the trial's constraints (``trial.set_constraint``) and user attributes; the
    caller tells the study ``result.values`` (or PRUNED when None). With
    ``search.compute_epochs`` the candidate trains rung by rung
    (:func:`search.rungs.train_rungs`), saved to ``checkpoints`` after each; a trial
    enqueued with the user attribute ``resume_of`` continues that trial's candidate
    from its checkpoint instead of pruning a new one.

    Args:
        problem: the job's fixed inputs.
        trial: a trial from ``study.ask()``.
        screen: in pareto mode, decides from the proxy accuracy whether to skip the
            fine-tune of a clearly dominated candidate (a rung search computes no
            proxy and never screens).
        should_stop: checked between training steps (cancellation).
        checkpoints: where a multi-fidelity candidate's rungs are saved (a fresh
            in-memory store if None: nothing outlives the process then).

    Returns:
        ``(result, model)``: the measurements and the fine-tuned model (None when the
        fine-tune was skipped).
    """
    spec = problem.spec
    fidelity = problem.fidelity
    store = checkpoints if checkpoints is not None else MemoryCheckpoints()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 6)
        clock = now

    floors = study_floors(trial.study) if fidelity is not None else None
    sampled = problem.space.suggest(trial, floors)
    lap("sample")
    resumed = resumed_candidate(problem, trial, store) if fidelity is not None else None
    if resumed is not None:
        model, plan, lineage = resumed
        lap("restore")
    else:
        plan = problem.space.project(sampled, floors)
        lineage = Lineage(trial.number)
    predicted = problem.space.predict(plan)
    lap("project")
    if resumed is None:
        model = build_candidate(problem, plan)
        lap("apply")
    inherited = None if resumed is None else inherited_measurements(trial, spec.pruning.sequence)
    if inherited is not None:  # its origin's structure, measured there: nothing to redo
        cost, latency_ms, latency_p90_ms, measured = inherited
        lap("cost")
    else:
        cost = (
            predicted
            if problem.cost_is_exact
            else measure_candidate_cost(model, problem.input_shape, spec.pruning.sequence)
        )
        lap("cost")
        latency_ms, latency_p90_ms, where = _measure_latency(problem, model, plan)
        measured = sparse_record(cost) | where
    lap("latency")
    # one transaction; rung rivals compare costs while this one runs
    write_user_attrs(
        trial, measured | {"sampled": sampled, "macs": cost.macs, "latency_ms": latency_ms}
    )

    def finish(
        skipped: str | None,
        proxy: float | None,
        accuracy: float | None,
        values: tuple[float, ...] | None,
    ) -> TrialResult:
        constraints = {}
        if spec.objective != "scalar":
            constraints = problem.budget.constraints(
                macs=cost.macs, params=cost.params, latency_ms=latency_ms, accuracy=accuracy
            )
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        result = TrialResult(
            number=trial.number,
            plan=plan,
            macs=cost.macs,
            params=cost.params,
            size_bytes=cost.size_bytes,
            macs_predicted=predicted.macs,
            latency_ms=latency_ms,
            latency_p90_ms=latency_p90_ms,
            proxy_accuracy=proxy,
            val_accuracy=accuracy,
            constraints=constraints,
            skipped=skipped,
            values=values,
            seconds=seconds,
            rung=lineage.rung if fidelity is not None else None,
            epochs=lineage.epochs,
        )
        recorded = trial.user_attrs  # the trial's own cached copy: no storage read
        changed = {
            key: value
            for key, value in result.user_attrs().items()
            if key not in recorded or recorded[key] != value
        }
        write_user_attrs(trial, changed)
        return result

    over_latency = (
        problem.budget.max_latency_ms is not None
        and latency_ms is not None
        and latency_ms > problem.budget.max_latency_ms
    )
    if over_latency or not problem.budget.admits_cost(cost):
        # structure alone breaks the budget: no training can fix it
        worst = objective_values(problem, 0.0, cost.macs, cost.params, latency_ms)
        return finish("infeasible", None, None, worst), None

    problem.place(model)  # recalibrated, trained and evaluated on the worker's device
    seed = spec.search.seed * 100_003 + trial.number
    proxy = trial.user_attrs.get("proxy_accuracy")
    if resumed is None and fidelity is None:
        recalibrate_batchnorm(model, problem.data.train, batches=BN_BATCHES, seed=seed)
        lap("bn_recal")
        proxy = evaluate(model, problem.data.val).top1
        lap("evaluate")
        if len(directions(spec)) == 1:
            trial.report(proxy, step=0)
            # a proxy at chance says nothing about the candidate: only the fine-tune can tell
            if proxy > _chance_level(problem) and trial.should_prune():
                return finish("pruned", proxy, None, None), None
        elif screen is not None and screen(proxy, cost.macs, latency_ms):
            return finish("dominated", proxy, None, None), None

    finetune = spec.finetune
    skipped: str | None = None
    if fidelity is not None:
        outcome = train_rungs(
            problem,
            trial,
            model,
            plan,
            lineage,
            fidelity=fidelity,
            checkpoints=store,
            promote=RungPromoter(problem, trial, cost.macs, latency_ms),
            seed=seed,
            should_stop=should_stop,
        )
        lineage, skipped, accuracy = outcome.lineage, outcome.stopped, outcome.accuracy
        for stage, spent in outcome.seconds.items():  # the rungs time their own stages
            seconds[stage] = round(seconds.get(stage, 0.0) + spent, 6)
        clock = time.perf_counter()
        if math.isnan(accuracy):  # no rung trained: the compute ran out first
            return finish(skipped, proxy, None, None), None
    else:
        if finetune.steps_per_trial or finetune.epochs_per_trial > 0:
            with zeros_held(model, spec.pruning.sequence):
                trained = fine_tune(
                    model,
                    problem.data.train,
                    epochs=None if finetune.steps_per_trial else finetune.epochs_per_trial,
                    steps=finetune.steps_per_trial,
                    lr=finetune.lr,
                    batch_size=finetune.batch_size,
                    seed=seed,
                    should_stop=should_stop,
                    amp=finetune.amp,
                )
            lineage = lineage.extended(
                trial=trial.number,
                stage="trial",
                steps=trained.steps,
                epochs=trained.epochs,
                lr=finetune.lr,
                rung=-1,
            )
            # at once: compute spent counts even if the trial fails before its last write
            trial.set_user_attr("epochs_trained", round(trained.epochs, 6))
        lap("finetune")
        accuracy = evaluate(model, problem.data.val).top1
        lap("evaluate")
    values = objective_values(problem, accuracy, cost.macs, cost.params, latency_ms)
    logger.info(
        "trial %d: val %.4f (proxy %s), MACs %.3f of baseline%s",
        trial.number,
        accuracy,
        f"{proxy:.4f}" if proxy is not None else "-",
        cost.macs / problem.baseline.cost.macs,
        f", rung {lineage.rung} after {lineage.epochs:.2f} epochs" if fidelity else "",
        extra={"trial": trial.number},
    )
    return finish(skipped, proxy, accuracy, None if skipped else values), model


def _measure_latency(
    problem: PruningProblem, model: nn.Module, plan: Plan
) -> tuple[float | None, float | None, dict[str, str]]:
    """Return a fresh candidate's median and p90 latency where the job asks for it (the
    device's layer table predicts the median, and the front is measured at the end; else
    the meter measures both) and where they came from, as the trial's attributes
    ``latency_device`` and ``latency_source`` (none without latency)."""
    spec = problem.spec
    if not spec.measures_latency:
        return None, None, {}
    if problem.latency_table is not None:
        where = {"latency_device": problem.latency_meter.where, "latency_source": "table"}
        return problem.latency_table.predict(plan), None, where
    latency = problem.measure_latency(model)
    return (
        latency.median_ms,
        latency.p90_ms,
        {"latency_device": latency.device, "latency_source": "measured"},
    )
