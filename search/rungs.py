"""Training one candidate rung by rung, each rung continuing its own weights.

A multi-fidelity trial (a job with ``search.compute_epochs``) trains its candidate to
the end of a rung, evaluates it on the validation split, saves it, and asks whether it
goes on now (:mod:`search.promotion`: among the best third of the rung's entrants so
far, and affordable). If not, the trial ends with
the candidate *paused*; a later trial may continue it from its checkpoint. A candidate
that goes on trains from the step it reached, with the data order continuing and the
learning rate on one cosine envelope over the delivered model's whole training
(:func:`envelope_lr`): each rung decays to zero from the envelope's height where it
starts, so a rung's accuracy is that of a settled model, and a later rung does not
start again from the initial rate.

A rung too short for the candidate's BatchNorm running statistics to have forgotten the
unpruned model's (:data:`STALE_BN_SHARE`) takes them from its last batch instead: on a
tiny data set, such rungs otherwise rank plans at chance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import optuna
from torch import nn

from models.prune import Plan
from models.train import (
    OptimizerCarry,
    TrainProgress,
    evaluate,
    fine_tune,
    stale_statistics_share,
    steps_per_epoch,
)
from search.checkpoints import CheckpointStore, Lineage, save_candidate
from search.fidelity import FidelityPlan
from search.hybrid import zeros_held
from search.problem import PruningProblem
from search.promotion import affordable
from search.storage import write_user_attrs

__all__ = [
    "STALE_BN_SHARE",
    "RungOutcome",
    "StopReason",
    "envelope_lr",
    "rung_steps",
    "train_rungs",
    "train_segment",
]

STALE_BN_SHARE = 0.01
"""The largest share of the unpruned model's BatchNorm statistics a candidate's running
averages may still hold at the end of a rung (:func:`models.train.stale_statistics_share`: a rung
that ends under 44 steps after pruning, at PyTorch's momentum 0.1); above it the rung's
last batch alone sets them (``fine_tune(last_batch_statistics=True)``: no extra forward),
and the candidate keeps them. Measured (resnet56_cifar on ``digits``, seed 0, 6.25 % of
the MACs; rungs ending 7 and 23 steps after pruning): on the running averages, the
uniform and global-magnitude plans scored 10 % (chance) after both rungs, the
half-depth plan 10 % and 27 %; on the last batch's statistics 20 / 34 / 40 % after 7
steps and 68 / 57 / 63 % after 23, as statistics re-estimated from a separate batch of
64 after training (21 / 34 / 42 % and 70 / 59 / 61 %), which cost a third of a step more
per rung. After the 66-step first rung of resnet20_cifar on 10,200 Fashion-MNIST images
the running averages scored as well as four re-estimated batches (60.8 / 67.2 % against
60.9 / 67.1 %) and better than one (60.0 / 64.5 %)."""

StopReason = Literal["paused", "budget"]
"""Why a candidate stopped below the top rung: ``paused``, it was not (yet) among the best
of its rung, or the compute left could not pay for its next rung (a later trial may
continue it: :func:`search.promotion.promote_paused`); ``budget``, the compute left could
not pay even for its first rung (it was never trained)."""


class PromotionRule(Protocol):
    """Decides after each rung whether a candidate goes on
    (:class:`search.continuation.RungPromoter`)."""

    def rung_attrs(self, rung: int, accuracy: float) -> dict[str, Any]:
        """Return more attributes to write with the rung's results."""
        ...

    def __call__(self, rung: int, accuracy: float, next_epochs: float) -> bool:
        """Return whether the candidate goes on to the next rung now: promotable, and the
        compute left pays for the ``next_epochs`` it trains."""
        ...


@dataclass(frozen=True)
class RungOutcome:
    """Where a candidate's rungs ended.

    Attributes:
        lineage: its training so far (the last rung's checkpoint holds the same).
        accuracy: validation accuracy at the end of the last rung trained.
        stopped: why it stopped below the top rung, or None if it reached it.
        seconds: wall-clock seconds of ``finetune``, ``evaluate``, ``checkpoint``
            (saving each rung) and ``promote`` (the decisions and the compute check, with
            the trial attributes written after each rung) over all rungs.
    """

    lineage: Lineage
    accuracy: float
    stopped: StopReason | None
    seconds: dict[str, float]


def envelope_lr(base_lr: float, step: int, horizon: int) -> float:
    """Return the learning rate a segment starting at ``step`` begins with: the height of
    one cosine from ``base_lr`` to zero over ``horizon`` steps."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, horizon) / max(1, horizon)))


def train_segment(
    problem: PruningProblem,
    model: nn.Module,
    lineage: Lineage,
    steps: int,
    lr: float,
    seed: int,
    *,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    offset: int = 0,
    lr_window: tuple[int, int] | None = None,
    carry: OptimizerCarry | None = None,
    last_batch_statistics: bool = False,
) -> None:
    """Train ``model`` ``steps`` more steps from where ``lineage`` left it (the data
    order continuing at its step), the learning rate decaying from ``lr`` to zero,
    distilling the unpruned model when the spec says so. Kernels a hybrid sequence
    removed stay zeros. Nothing happens for 0 steps. ``last_batch_statistics``: see
    :func:`models.train.fine_tune`.

    A segment trained in pieces (a pruning schedule's) gives each piece's ``offset``,
    the steps of the segment before it (the data continue ``offset`` steps after
    ``lineage``'s), its ``lr_window`` and the ``carry`` that keeps its momentum across
    pieces (see :func:`models.train.fine_tune`)."""
    finetune = problem.spec.finetune
    if steps <= 0:
        return
    with zeros_held(model, problem.spec.pruning.sequence):
        fine_tune(
            model,
            problem.data.train,
            steps=steps,
            lr=lr,
            batch_size=finetune.batch_size,
            seed=seed,
            start_step=lineage.steps + offset,
            lr_window=lr_window,
            teacher=problem.soft_targets if problem.spec.distills else None,
            distill_weight=finetune.distill_weight,
            temperature=finetune.distill_temperature,
            amp=finetune.amp,
            on_step=on_step,
            should_stop=should_stop,
            carry=carry,
            last_batch_statistics=last_batch_statistics,
        )


def rung_steps(problem: PruningProblem, fidelity: FidelityPlan) -> tuple[list[int], int]:
    """Return the optimizer steps at the end of each rung and the delivered model's
    total steps (the learning-rate envelope's horizon), on this problem's data."""
    per_epoch = steps_per_epoch(len(problem.data.train), problem.spec.finetune.batch_size)
    ends = [round(epochs * per_epoch) for epochs in fidelity.snapped(per_epoch).rungs]
    return ends, max(ends[-1], round(fidelity.final_epochs * per_epoch))


def train_rungs(
    problem: PruningProblem,
    trial: optuna.Trial,
    model: nn.Module,
    plan: Plan,
    lineage: Lineage,
    *,
    fidelity: FidelityPlan,
    checkpoints: CheckpointStore,
    promote: PromotionRule,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
) -> RungOutcome:
    """Train ``model`` through the rungs after ``lineage.rung`` until it stops or tops.

    After each rung the model is saved to ``checkpoints`` under the trial's number and
    the trial's user attributes ``rung``, ``rung_accuracy`` and ``rung_loss`` (val
    top-1 and mean cross-entropy, one per rung, from the first), ``epochs_trained`` and
    what ``promote.rung_attrs`` adds are updated in one transaction, so that other workers
    see this trial's spending and its place in the rung, all at once, while it runs.

    Args:
        problem: the job's fixed inputs.
        trial: the running trial.
        model: the candidate (trained ``lineage.steps`` steps so far); trained in place.
        plan: its plan (stored in the checkpoints).
        lineage: its training so far (a fresh candidate: ``Lineage(trial.number)``).
        fidelity: the job's rungs.
        checkpoints: where each rung's model goes.
        promote: decides after every rung below the top whether the candidate goes on
            (and names what to record with each rung).
        seed: seeds the data order (continued across rungs with the step count).
        should_stop: polled between steps (cancellation).
    """
    finetune = problem.spec.finetune
    ends, horizon = rung_steps(problem, fidelity)
    per_epoch = steps_per_epoch(len(problem.data.train), finetune.batch_size)
    # the rungs before this lineage's next one: a continuation carries them; a candidate
    # restarted afresh (its checkpoint lost) must not keep them
    accuracies = list(trial.user_attrs.get("rung_accuracy") or [])[: lineage.rung + 1]
    losses = list(trial.user_attrs.get("rung_loss") or [])[: lineage.rung + 1]
    accuracy = accuracies[-1] if accuracies else float("nan")
    seconds = {"finetune": 0.0, "evaluate": 0.0, "checkpoint": 0.0, "promote": 0.0}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(seconds[stage] + now - clock, 6)
        clock = now

    for rung in range(lineage.rung + 1, len(ends)):
        steps = ends[rung] - lineage.steps
        if rung == 0 and not affordable(
            trial.study.get_trials(deepcopy=False), fidelity, steps / per_epoch
        ):
            # a first rung rounded up to whole steps can outgrow a tiny budget
            return RungOutcome(lineage, accuracy, "budget", seconds)
        lr = envelope_lr(finetune.lr, lineage.steps, horizon)
        # a rung too short for the running averages to forget the unpruned model's
        # statistics is judged on its last batch's
        short = stale_statistics_share(model, ends[rung]) > STALE_BN_SHARE
        train_segment(
            problem,
            model,
            lineage,
            steps,
            lr,
            seed,
            should_stop=should_stop,
            last_batch_statistics=short,
        )
        epochs = max(0, steps) / per_epoch
        lineage = lineage.extended(
            trial=trial.number,
            stage=f"rung {rung}",
            steps=max(0, steps),
            epochs=epochs,
            lr=lr,
            rung=rung,
        )
        lap("finetune")
        evaluation = evaluate(model, problem.data.val)
        accuracy = evaluation.top1
        lap("evaluate")
        accuracies = accuracies[:rung] + [accuracy]
        losses = losses[:rung] + [evaluation.loss]
        checkpoints.save(trial.number, save_candidate(problem, model, plan, lineage))
        lap("checkpoint")
        trained = float(trial.user_attrs.get("epochs_trained", 0.0)) + epochs
        write_user_attrs(
            trial,
            {
                "rung": rung,
                "rung_accuracy": accuracies,
                "rung_loss": losses,
                "epochs_trained": round(trained, 6),
                **promote.rung_attrs(rung, accuracy),
            },
        )
        if rung == len(ends) - 1:
            break
        # it goes on now if it is promotable and the compute left pays for the next rung
        goes_on = promote(rung, accuracy, (ends[rung + 1] - ends[rung]) / per_epoch)
        lap("promote")
        if not goes_on:
            return RungOutcome(lineage, accuracy, "paused", seconds)
    return RungOutcome(lineage, accuracy, None, seconds)
