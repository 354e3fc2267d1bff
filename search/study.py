"""The Optuna study: samplers, pruner, warm start, and opening or resuming it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.pruners import BasePruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from search.fidelity import plan_fidelity, planned_trials
from search.problem import PruningProblem
from search.sensitivity_allocation import prior_floors
from search.sensitivity_record import Sensitivity
from search.space import FLOORS_ATTR
from search.spec import JobSpec, directions, objective_names
from search.storage import optuna_storage
from search.warm_start import warm_start_plans

__all__ = [
    "FINISHED_STATES",
    "STUDY_ATTR",
    "count_finished",
    "make_pruner",
    "make_sampler",
    "open_study",
]

logger = logging.getLogger(__name__)

STUDY_ATTR = "inferprune"
"""Study user attribute holding the spec, baseline and budget (JSON)."""

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def _startup_trials(spec: JobSpec) -> int:
    return max(3, min(10, planned_trials(spec) // 4))


def make_sampler(spec: JobSpec) -> BaseSampler:
    """Return the seeded sampler the spec names.

    ``tpe`` is multivariate with the constant liar (several workers do not all try the
    same point); ``gp`` is Optuna's Gaussian-process Bayesian optimization; ``nsga2``
    uses a population of about a third of the trials; ``qmc`` is scrambled Sobol.
    Constrained samplers read the constraints each trial sets.
    """
    seed = spec.search.seed
    name = spec.search.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                constant_liar=True,
                n_startup_trials=_startup_trials(spec),
            )
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup_trials(spec))
        if name == "nsga2":
            size = max(4, min(50, planned_trials(spec) // 3))
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=size)
        if name == "qmc":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
            )
        return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: JobSpec) -> BasePruner:
    """Return the early-stopping rule for trials.

    Single-objective maximization: a median rule on the accuracy after BN
    recalibration (step 0), after a few trials. Pareto and "smallest model" jobs use no
    Optuna pruner (pareto screens dominated candidates itself), and neither do rung
    searches (``compute_epochs``): their candidates pause and resume, which Optuna's
    pruners cannot do (see :mod:`search.promotion`).
    """
    if directions(spec) != ["maximize"] or plan_fidelity(spec) is not None:
        return NopPruner()
    return MedianPruner(n_startup_trials=_startup_trials(spec), n_warmup_steps=0)


def open_study(
    problem: PruningProblem,
    storage: str | optuna.storages.BaseStorage,
    name: str | None = None,
    *,
    sensitivity: Callable[[], Sensitivity | None] | None = None,
) -> optuna.Study:
    """Create the job's study in ``storage``, or load it if it exists (resume).

    A new study gets the warm-start plans enqueued (:func:`search.warm_start_plans`),
    with a sensitivity scan the scan's prior on the space (``space_floors``: see
    :func:`search.sensitivity_allocation.prior_floors`), and a ``inferprune`` user attribute
    describing the job. A URL is opened with
    :func:`search.storage.optuna_storage`.

    Args:
        problem: the job's fixed inputs.
        storage: an Optuna storage or its URL.
        name: the study's name (default: derived from the spec, so a rerun resumes).
        sensitivity: gives the job's sensitivity scan (see
            :func:`search.job_sensitivity`); called only when the study is new.
    """
    spec = problem.spec
    study_name = name or spec.study_name()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(storage, str):
        storage = optuna_storage(storage)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=directions(spec),
        sampler=make_sampler(spec),
        pruner=make_pruner(spec),
        load_if_exists=True,
    )
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR, describe_job(problem))
        if not study.get_trials(deepcopy=False):
            scan = sensitivity() if sensitivity is not None else None
            warm = warm_start_plans(problem, scan)
            if scan is not None:  # the scan's prior narrows where the sampler looks
                floors = prior_floors(scan, problem.space, [plan.to_dict() for _, plan in warm])
                study.set_user_attr(FLOORS_ATTR, floors)
            for kind, plan in warm:
                study.enqueue_trial(
                    problem.space.params_from_widths(plan),
                    user_attrs={"warm_start": True, "warm_start_kind": kind},
                    skip_if_exists=True,
                )
    else:
        logger.info("resuming study %s with %d trials", study_name, len(study.trials))
    return study


def describe_job(problem: PruningProblem) -> dict[str, Any]:
    """Return what the study records about its job (spec, baseline, budget, objectives)."""
    return {
        "spec": problem.spec.to_json_dict(),
        "baseline": problem.baseline.to_dict(),
        "budget": problem.budget.to_dict(),
        "objectives": objective_names(problem.spec),
        "groups": len(problem.space.groups),
    }


def count_finished(study: optuna.Study) -> int:
    """Return the number of completed or pruned trials."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
