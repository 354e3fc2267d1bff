"""The optimization: which channels each group keeps, found by an Optuna study.

A :class:`~search.spec.JobSpec` describes the job. :func:`load_problem` loads its model
and data once per process; :func:`open_study` creates or resumes the Optuna study;
:func:`run_search` (or :func:`run_one_trial`, for workers) evaluates candidates;
:func:`prune_module` does all of it for a user's own ``nn.Module`` and data loaders;
:func:`conclude_search` ends a job once its search is over (select the best trial,
finalize it, measure the baseline, build the report and the artifacts), for the CLI and
the workers alike; :func:`write_conclusion` saves it to a folder. :func:`apply_once`
prunes with one given plan.
No HTTP here; :mod:`service` builds the product on top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Baseline",
    "Budget",
    "BudgetUnreachableError",
    "Conclusion",
    "FidelityPlan",
    "FinalModel",
    "FolderCheckpoints",
    "CheckpointStore",
    "Lineage",
    "MemoryCheckpoints",
    "FinetuneSettings",
    "JobSpec",
    "LatencyMeter",
    "LatencySettings",
    "LocalMeter",
    "Measured",
    "NoFeasibleTrialError",
    "ParetoPoint",
    "PrunedModule",
    "PruningProblem",
    "PruningSettings",
    "ResolvedBudget",
    "SearchError",
    "SearchSettings",
    "SearchSpace",
    "Sensitivity",
    "SensitivityCache",
    "SpecError",
    "TrialResult",
    "build_candidate",
    "allocate_by_sensitivity",
    "apply_once",
    "build_report",
    "candidate_info",
    "checkpoint_info",
    "conclude_search",
    "count_finished",
    "directions",
    "dominance_screen",
    "feasible_trials",
    "finalize",
    "global_magnitude_plan",
    "hypervolume",
    "job_sensitivity",
    "load_onnx_problem",
    "load_problem",
    "prune_module",
    "make_pruner",
    "make_sampler",
    "measure_baseline",
    "objective_names",
    "open_study",
    "optuna_storage",
    "pareto_front",
    "plan_fidelity",
    "planned_trials",
    "requeue_trial",
    "plot_pareto",
    "plot_sensitivity",
    "resolve_budget",
    "run_one_trial",
    "run_search",
    "run_trial",
    "scan_sensitivity",
    "select_best",
    "select_delivered",
    "trial_points",
    "trial_summaries",
    "warm_start_plans",
    "write_conclusion",
]

# Names load on first use, so that importing a light part (``search.spec``) does not
# pull in torch: the API process starts fast and imports the heavy parts only when an
# upload needs validating.
_EXPORTS = {
    "Baseline": "search.problem",
    "Budget": "search.spec",
    "BudgetUnreachableError": "search.errors",
    "Conclusion": "search.lifecycle",
    "FinalModel": "search.final",
    "FidelityPlan": "search.fidelity",
    "FolderCheckpoints": "search.checkpoints",
    "CheckpointStore": "search.checkpoints",
    "Lineage": "search.checkpoints",
    "MemoryCheckpoints": "search.checkpoints",
    "plan_fidelity": "search.fidelity",
    "planned_trials": "search.fidelity",
    "requeue_trial": "search.runner",
    "FinetuneSettings": "search.spec",
    "JobSpec": "search.spec",
    "LatencyMeter": "search.latency",
    "LatencySettings": "search.spec",
    "LocalMeter": "search.latency",
    "Measured": "search.final",
    "NoFeasibleTrialError": "search.errors",
    "ParetoPoint": "search.pareto",
    "PruningProblem": "search.problem",
    "PruningSettings": "search.spec",
    "ResolvedBudget": "search.budget",
    "SearchError": "search.errors",
    "SearchSettings": "search.spec",
    "SearchSpace": "search.space",
    "Sensitivity": "search.sensitivity_record",
    "SpecError": "search.errors",
    "TrialResult": "search.objective",
    "build_candidate": "search.problem",
    "allocate_by_sensitivity": "search.sensitivity_allocation",
    "apply_once": "search.oneshot",
    "build_report": "search.report",
    "candidate_info": "search.checkpoints",
    "checkpoint_info": "search.checkpoints",
    "conclude_search": "search.lifecycle",
    "count_finished": "search.study",
    "directions": "search.spec",
    "dominance_screen": "search.runner",
    "feasible_trials": "search.pareto",
    "finalize": "search.final",
    "hypervolume": "search.pareto",
    "job_sensitivity": "search.warm_start",
    "global_magnitude_plan": "search.warm_start",
    "warm_start_plans": "search.warm_start",
    "SensitivityCache": "search.warm_start",
    "load_problem": "search.loading",
    "load_onnx_problem": "search.loading",
    "prune_module": "search.user_model",
    "PrunedModule": "search.user_model",
    "make_pruner": "search.study",
    "make_sampler": "search.study",
    "measure_baseline": "search.final",
    "objective_names": "search.spec",
    "open_study": "search.study",
    "optuna_storage": "search.storage",
    "pareto_front": "search.pareto",
    "plot_pareto": "search.pareto",
    "plot_sensitivity": "search.sensitivity_plot",
    "resolve_budget": "search.budget",
    "run_one_trial": "search.runner",
    "run_search": "search.runner",
    "run_trial": "search.objective",
    "scan_sensitivity": "search.sensitivity",
    "select_best": "search.pareto",
    "select_delivered": "search.lifecycle",
    "trial_points": "search.pareto",
    "trial_summaries": "search.report",
    "write_conclusion": "search.lifecycle",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # the static view of the same names
    from search.budget import ResolvedBudget, resolve_budget
    from search.checkpoints import (
        CheckpointStore,
        FolderCheckpoints,
        Lineage,
        MemoryCheckpoints,
        candidate_info,
        checkpoint_info,
    )
    from search.errors import BudgetUnreachableError, NoFeasibleTrialError, SearchError, SpecError
    from search.fidelity import FidelityPlan, plan_fidelity, planned_trials
    from search.final import FinalModel, Measured, finalize, measure_baseline
    from search.latency import LatencyMeter, LocalMeter
    from search.lifecycle import Conclusion, conclude_search, select_delivered, write_conclusion
    from search.loading import load_onnx_problem, load_problem
    from search.objective import TrialResult, run_trial
    from search.oneshot import apply_once
    from search.pareto import (
        ParetoPoint,
        feasible_trials,
        hypervolume,
        pareto_front,
        plot_pareto,
        select_best,
        trial_points,
    )
    from search.problem import Baseline, PruningProblem, build_candidate
    from search.report import build_report, trial_summaries
    from search.runner import dominance_screen, requeue_trial, run_one_trial, run_search
    from search.sensitivity import scan_sensitivity
    from search.sensitivity_allocation import allocate_by_sensitivity
    from search.sensitivity_plot import plot_sensitivity
    from search.sensitivity_record import Sensitivity
    from search.space import SearchSpace
    from search.spec import (
        Budget,
        FinetuneSettings,
        JobSpec,
        LatencySettings,
        PruningSettings,
        SearchSettings,
        directions,
        objective_names,
    )
    from search.storage import optuna_storage
    from search.study import count_finished, make_pruner, make_sampler, open_study
    from search.user_model import PrunedModule, prune_module
    from search.warm_start import (
        SensitivityCache,
        global_magnitude_plan,
        job_sensitivity,
        warm_start_plans,
    )
