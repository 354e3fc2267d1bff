"""Running trials in this process: ask, evaluate, tell, until enough are done."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from models.errors import TrainingDivergedError
from search.checkpoints import CheckpointStore
from search.objective import SCREEN_MARGIN, Screen, TrialResult, run_trial
from search.problem import PruningProblem
from search.promotion import continuation_attrs, promote_paused, search_finished
from search.study import count_finished

__all__ = [
    "OnTrial",
    "dominance_screen",
    "older_objects_frozen",
    "requeue_trial",
    "run_search",
    "run_one_trial",
]

logger = logging.getLogger(__name__)

OnTrial = Callable[[TrialResult, nn.Module | None], None]


def dominance_screen(problem: PruningProblem, study: optuna.Study) -> Screen:
    """Return the pareto screen: skip a candidate whose BN-recalibrated accuracy is at
    least :data:`SCREEN_MARGIN` below that of a finished trial that costs no more."""

    def screen(proxy: float, macs: int, latency_ms: float | None) -> bool:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            other = t.user_attrs.get("proxy_accuracy")
            if other is None or t.user_attrs.get("skipped"):
                continue
            cheaper = t.user_attrs.get("macs", macs + 1) <= macs
            if latency_ms is not None and t.user_attrs.get("latency_ms") is not None:
                cheaper = cheaper and t.user_attrs["latency_ms"] <= latency_ms
            if cheaper and other >= proxy + SCREEN_MARGIN:
                return True
        return False

    return screen


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Leave every object alive before the block out of the garbage collector's passes
    while it runs (:func:`gc.freeze`); a caller that froze objects itself is left alone.

    A worker that has imported torch and loaded a job holds ~450,000 objects the cyclic
    collector tracks; a full collection walks them all (0.25-0.35 s on the 2-core benchmark
    VMs, 0.4-0.8 s under load) and came about once per job of 8-16 trials, a fifth of a
    small trial where it landed; frozen, they happen between trials. Objects the block
    creates are collected as usual; cycles it breaks among older ones wait until it ends.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@older_objects_frozen()
def run_one_trial(
    problem: PruningProblem,
    study: optuna.Study,
    *,
    on_trial: OnTrial | None = None,
    on_ask: Callable[[optuna.Trial], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointStore | None = None,
    on_promote: Callable[[int], None] | None = None,
) -> TrialResult | None:
    """Ask the study for a trial, evaluate it and tell the result.

    A diverging fine-tune fails the trial (its error kept in the ``error`` user
    attribute) and returns None; other errors fail the trial and propagate.

    Args:
        problem: the job's fixed inputs.
        study: the job's study.
        on_trial: called with the result and the fine-tuned model after the tell.
        on_ask: called with the new trial before any work (workers record its number).
        should_stop: checked between training steps.
        checkpoints: where a multi-fidelity candidate is saved after every rung.
        on_promote: called with the number of paused candidates this trial's result
            queued for their next rung (each is one more trial to run).

    The trial runs with the objects older than it frozen (:func:`older_objects_frozen`).
    """
    trial = study.ask()
    if on_ask is not None:
        on_ask(trial)
    screen = dominance_screen(problem, study) if len(study.directions) > 1 else None
    try:
        result, model = run_trial(
            problem, trial, screen=screen, should_stop=should_stop, checkpoints=checkpoints
        )
    except TrainingDivergedError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        logger.warning("trial %d failed: %s", trial.number, exc, extra={"trial": trial.number})
        return None
    except BaseException as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    started = time.perf_counter()
    if result.values is None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, list(result.values))
    fidelity = problem.fidelity
    if fidelity is not None:  # this trial's rung may have made paused candidates promotable
        promoted = promote_paused(problem.spec, fidelity, study)
        if promoted and on_promote is not None:
            on_promote(promoted)
    result.seconds["storage"] = round(time.perf_counter() - started, 6)
    if on_trial is not None:
        on_trial(result, model)
    return result


def run_search(
    problem: PruningProblem,
    study: optuna.Study,
    *,
    trials: int,
    timeout_s: float | None = None,
    on_trial: OnTrial | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointStore | None = None,
) -> int:
    """Run trials until ``trials`` are finished in the study (counting earlier ones, so a
    resumed study continues), the timeout passes, or ``should_stop`` says so. A rung
    search (``compute_epochs``) runs until every candidate has started and no
    continuation is queued.

    Returns:
        The number of finished (complete or pruned) trials in the study.
    """
    started = time.monotonic()
    fidelity = problem.fidelity

    def more() -> bool:
        if fidelity is not None:
            return not search_finished(study, fidelity)
        return count_finished(study) < trials

    while more():
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            logger.info("search timeout after %.0f s", timeout_s)
            break
        if should_stop is not None and should_stop():
            break
        run_one_trial(
            problem, study, on_trial=on_trial, should_stop=should_stop, checkpoints=checkpoints
        )
    return count_finished(study)


def requeue_trial(study: optuna.Study, trial: FrozenTrial, *, max_attempts: int) -> bool:
    """Queue a lost trial's work again (its worker died, or was stopped mid-trial).

    A candidate that finished a rung is resumed from that rung's checkpoint (the new
    trial carries ``resume_of``: only the rung in flight is lost); any other is
    evaluated again from scratch with the same parameters. Attempts are counted in the
    ``attempt`` user attribute and capped.

    Returns:
        Whether the trial was queued again.
    """
    attempt = int(trial.user_attrs.get("attempt", 1))
    if not trial.params or attempt >= max_attempts:
        return False
    attrs: dict[str, object] = {"retry_of": trial.number, "attempt": attempt + 1}
    # its own last rung, else the one it was itself resuming from
    origin = trial.number if trial.user_attrs.get("rung") is not None else None
    origin = origin if origin is not None else trial.user_attrs.get("resume_of")
    if origin is not None:
        candidate = int(trial.user_attrs.get("candidate", trial.number))
        attrs |= continuation_attrs(trial, candidate) | {"resume_of": origin}
    elif trial.user_attrs.get("warm_start"):
        attrs |= {k: trial.user_attrs[k] for k in ("warm_start", "warm_start_kind")}
    study.enqueue_trial(trial.params, user_attrs=attrs)
    return True
