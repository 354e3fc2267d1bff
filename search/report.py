"""A search described as data: report.json's content and a checkpoint's metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from models.io import CheckpointInfo
from search.final import FinalModel, Measured
from search.pareto import hypervolume, pareto_front, trial_points
from search.problem import PruningProblem
from search.spec import objective_names

__all__ = ["build_report", "checkpoint_info", "trial_summaries"]

REPORT_VERSION = 1


def trial_summaries(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """Return one JSON record per trial: state, values, measurements, stage seconds."""
    out = []
    for t in trials:
        a = t.user_attrs
        out.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "values": list(t.values) if t.values else None,
                "val_accuracy": a.get("val_accuracy"),
                "proxy_accuracy": a.get("proxy_accuracy"),
                "macs": a.get("macs"),
                "params": a.get("params"),
                "latency_ms": a.get("latency_ms"),
                "latency_p90_ms": a.get("latency_p90_ms"),
                "feasible": a.get("feasible"),
                "skipped": a.get("skipped"),
                "warm_start": bool(a.get("warm_start")),
                "error": a.get("error"),
                "plan": a.get("plan"),
                "seconds": a.get("seconds"),
            }
        )
    return out


def checkpoint_info(
    problem: PruningProblem, plan: dict[str, int], **extra: object
) -> CheckpointInfo:
    """Return the metadata a pruned checkpoint of this job carries."""
    from models.prune import Plan

    norm = problem.data.normalization
    return CheckpointInfo(
        arch=problem.info.arch,
        num_classes=problem.info.num_classes,
        input_shape=problem.input_shape,
        plan=Plan({g.name: plan.get(g.name, g.channels) for g in problem.graph.groups}),
        round_to=problem.spec.pruning.round_to,
        normalization={"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
        extra={k: str(v) for k, v in extra.items()},
    )


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
    }
