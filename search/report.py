"""A search described as data: report.json's content and a checkpoint's metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from search.fidelity import compute_spent
from search.final import FinalModel, Measured
from search.pareto import hypervolume, pareto_front, trial_points
from search.problem import PruningProblem
from search.spec import objective_names

__all__ = ["build_report", "compute_report", "trial_summaries"]

REPORT_VERSION = 1


def trial_summaries(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """Return one JSON record per trial: state, values, measurements, stage seconds."""
    out = []
    for t in trials:
        a = t.user_attrs
        sparse: dict[str, Any] = {k: a[k] for k in ("nonzero_params", "effective_macs") if k in a}
        out.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "values": list(t.values) if t.values else None,
                "val_accuracy": a.get("val_accuracy"),
                "proxy_accuracy": a.get("proxy_accuracy"),
                "macs": a.get("macs"),
                "params": a.get("params"),
                **sparse,  # a hybrid sequence's kernel steps
                "latency_ms": a.get("latency_ms"),
                "latency_p90_ms": a.get("latency_p90_ms"),
                "latency_device": a.get("latency_device"),
                "latency_source": a.get("latency_source"),
                "feasible": a.get("feasible"),
                "skipped": a.get("skipped"),
                "warm_start": bool(a.get("warm_start")),
                "error": a.get("error"),
                "plan": a.get("plan"),
                "seconds": a.get("seconds"),
                "rung": a.get("rung"),
                "epochs_trained": a.get("epochs_trained"),
                "resume_of": a.get("resume_of"),
            }
        )
    return out


def build_report(
    problem: PruningProblem,
    trials: Sequence[FrozenTrial],
    *,
    baseline: Measured | None,
    final: FinalModel | None,
    storage: str,
    study_name: str,
    status: str,
    timing: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Return the report as JSON data (the layout DESIGN.md gives for report.json)."""
    spec = problem.spec
    points = trial_points(trials)
    with_latency = spec.measures_latency
    front = pareto_front([p for p in points if p.feasible], with_latency=with_latency)
    base = baseline.to_dict() if baseline else problem.baseline.to_dict()
    best = None
    if final is not None:
        best = {
            "trial": final.trial,
            "plan": final.plan.to_dict(),
            **final.measured.to_dict(),
            "search_val_accuracy": final.search_val_accuracy,
            "training_history": list(final.lineage.history),
            "schedule": final.schedule,
        }
    return {
        "version": REPORT_VERSION,
        "status": status,
        "arch": problem.info.arch,
        "dataset": problem.data.name,
        "pretrained": problem.pretrained,
        "spec": spec.to_json_dict(),
        "objectives": objective_names(spec),
        "budget": problem.budget.to_dict(),
        "baseline": base,
        "best": best,
        "pareto": [p.to_dict() for p in front],
        "hypervolume": hypervolume(
            [p for p in points if p.feasible],
            problem.baseline.cost.macs,
        ),
        "trials": trial_summaries(trials),
        "study": {"storage": storage, "name": study_name},
        "timing": timing or {},
        "compute": compute_report(problem, trials, final),
    }


def compute_report(
    problem: PruningProblem, trials: Sequence[FrozenTrial], final: FinalModel | None
) -> dict[str, Any]:
    """Return the training the job spent, in epochs of the training split.

    ``trials_epochs`` is what every trial trained (failed and lost ones included);
    ``final_epochs`` what the final fine-tune added; ``epochs`` their sum;
    ``final_from_trial`` the trial whose weights the final fine-tune continued (None
    when it pruned the plan afresh); ``budget_epochs`` the spec's ``compute_epochs``;
    ``fidelity`` how the budget was split into rungs.
    """
    spent = compute_spent(trials)
    final_epochs = final.final_epochs if final is not None else 0.0
    fidelity = problem.fidelity
    return {
        "epochs": round(spent + final_epochs, 6),
        "trials_epochs": round(spent, 6),
        "final_epochs": round(final_epochs, 6),
        "final_from_trial": final.trial if final is not None and final.continued else None,
        "budget_epochs": problem.spec.search.compute_epochs,
        "fidelity": fidelity.to_dict() if fidelity is not None else None,
    }
