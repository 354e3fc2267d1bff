"""What happens to a job once its search is over, written once for every entry point.

Select the best trial → finalize it (the long fine-tune, test accuracy) → measure the
unpruned baseline → build the report → produce the artifacts (checkpoint, ONNX, plot).
``inferprune prune`` writes the outcome to a folder; a worker puts it in the store. Both
call :func:`conclude_search` and only decide where the bytes go.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from optuna.trial import FrozenTrial

from models.io import checkpoint_bytes, export_onnx
from models.prune import Plan
from models.train import TrainProgress
from search.checkpoints import CheckpointStore, checkpoint_info
from search.fidelity import compute_spent
from search.final import FinalModel, finalize, measure_baseline
from search.hybrid import kernels_removed
from search.latency_table import confirm_delivered, confirm_front
from search.pareto import (
    ParetoPoint,
    feasible_trials,
    pareto_front,
    plot_pareto,
    select_best,
    trial_points,
)
from search.problem import PruningProblem
from search.promotion import select_paused
from search.report import build_report

__all__ = [
    "ARTIFACT_NAMES",
    "LARGE_ACCURACY_DROP",
    "Conclusion",
    "ConclusionStatus",
    "accuracy_warnings",
    "conclude_search",
    "pareto_png",
    "select_delivered",
    "write_conclusion",
]

ConclusionStatus = Literal["succeeded", "no_feasible_trial", "cancelled", "interrupted"]

ARTIFACT_NAMES = ("model.safetensors", "model.onnx", "pareto.png")
"""The files a finished job delivers, by the names ``prune --out`` gives them."""

LARGE_ACCURACY_DROP = 0.05
"""A test-accuracy loss (as a fraction) past which a job without an accuracy budget says
so: five points is more than most users would ship without a second look."""


@dataclass(frozen=True)
class Conclusion:
    """How a search ended, with everything a job delivers.

    Attributes:
        status: ``succeeded``; ``no_feasible_trial`` (no trial met the budget);
            ``cancelled`` (asked to stop during the final fine-tune); ``interrupted``
            (the search itself was stopped; a rerun resumes it).
        report: report.json's content (see DESIGN.md), for every status.
        final: the finalized model, when succeeded.
        artifacts: file name (one of :data:`ARTIFACT_NAMES`) → bytes; the plot for every
            status with trials, the model files only when succeeded.
        message: for a job that did not succeed, why, in words a user can act on.
        warnings: things a user should know about a succeeded job (a large accuracy drop
            and what to change); also in ``report["warnings"]``.
    """

    status: ConclusionStatus
    report: dict[str, Any]
    final: FinalModel | None = None
    artifacts: Mapping[str, bytes] = field(default_factory=dict)
    message: str | None = None
    warnings: tuple[str, ...] = ()


def conclude_search(
    problem: PruningProblem,
    trials: Sequence[FrozenTrial],
    *,
    storage: str,
    study_name: str,
    status: ConclusionStatus | None = None,
    timing: Mapping[str, float] | None = None,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointStore | None = None,
    **checkpoint_extra: object,
) -> Conclusion:
    """Finish a job whose search is over: pick, finalize, report, produce the artifacts.

    Args:
        problem: the job's loaded inputs.
        trials: every trial of the job's study.
        storage: where the study lives, as the report names it.
        study_name: the study's name.
        status: ``interrupted`` to report the trials so far without finalizing;
            None to finalize.
        timing: seconds of earlier stages for the report (``search_s`` …);
            ``finalize_s`` is added.
        on_step: progress of the final fine-tune.
        should_stop: polled during the final fine-tune; true cancels the job.
        checkpoints: where the search saved its candidates (with ``compute_epochs`` the
            chosen one is trained on from its checkpoint; without one it is pruned
            afresh).
        **checkpoint_extra: more metadata for the delivered checkpoint (e.g. ``job=``).

    Returns:
        The :class:`Conclusion`; its report is complete whatever the status.
    """
    times = dict(timing or {})
    checks: list[dict[str, Any]] = []
    best = select_delivered(problem, trials, latency_checks=checks) if status is None else None
    if best is None:
        ended: ConclusionStatus = status or "no_feasible_trial"
        report = _report(problem, trials, storage, study_name, ended, times)
        message = None
        if ended == "no_feasible_trial":
            message = (
                f"none of the {len(trials)} trials met the budget; loosen it, or run more trials"
            )
        return Conclusion(ended, report, artifacts=_plot_only(problem, trials), message=message)
    started = time.perf_counter()
    # a pick narrowed to meet a measured latency budget no longer fits its trial's weights
    resume = checkpoints is not None and best.plan == _trial_plan(trials, best.trial)
    final = finalize(
        problem,
        Plan(best.plan),
        best.trial,
        search_val_accuracy=best.val_accuracy,
        checkpoint=checkpoints.load(best.trial) if resume and checkpoints else None,
        spent_epochs=compute_spent(trials),
        on_step=on_step,
        should_stop=should_stop,
    )
    if should_stop is not None and should_stop():
        report = _report(problem, trials, storage, study_name, "cancelled", times)
        return Conclusion("cancelled", report, message="cancelled during the final fine-tune")
    baseline = measure_baseline(problem)
    times["finalize_s"] = round(time.perf_counter() - started, 2)
    report = build_report(
        problem,
        trials,
        baseline=baseline,
        final=final,
        storage=storage,
        study_name=study_name,
        status="succeeded",
        timing=times,
    )
    if problem.latency_table is not None and problem.spec.measures_latency:
        front = pareto_front([p for p in trial_points(trials) if p.feasible], with_latency=True)
        measured = confirm_front(problem, front)
        report["latency_check"] = {
            "device": problem.latency_meter.where,
            "delivered": checks,
            "front": [
                {"trial": p.trial, "predicted_ms": p.latency_ms, "measured_ms": measured[p.trial]}
                for p in front
            ],
        }
    warnings = accuracy_warnings(problem, report) + latency_warnings(problem, report)
    report["warnings"] = list(warnings)
    info = checkpoint_info(
        problem,
        final.plan.to_dict(),
        trial=final.trial,
        lineage=final.lineage.to_json(),  # its whole training, the search's rungs included
        **checkpoint_extra,
    )
    masks = kernels_removed(final.model, problem.spec.pruning.sequence)
    if masks is not None:  # the kernels a hybrid sequence removed, stored packed
        info = replace(info, kernel_masks=masks)
    artifacts = {
        "model.safetensors": checkpoint_bytes(final.model, info),
        # checked in onnxruntime against torch: what a user downloads runs as tested
        "model.onnx": export_onnx(final.model, problem.input_shape),
        "pareto.png": pareto_png(problem, trials, final),
    }
    return Conclusion("succeeded", report, final, artifacts, warnings=warnings)


def select_delivered(
    problem: PruningProblem,
    trials: Sequence[FrozenTrial],
    *,
    latency_checks: list[dict[str, Any]] | None = None,
) -> ParetoPoint | None:
    """Return the trial a finished search delivers: :func:`search.select_best`'s pick, or
    in a rung search where no candidate reached the top rung, the best paused one of the
    highest rung reached (:func:`search.promotion.select_paused`). None: nothing fits.

    With ``latency.predictor: table`` and a latency budget, the table's pick is measured
    end to end first; if it is over the budget, the next most accurate feasible trials
    are, until one meets it (:func:`search.latency_table.confirm_delivered`); the point
    returned then carries its measured latency. Each measurement made is appended to
    ``latency_checks`` when given.
    """
    best = select_best(problem.spec, trials)
    if best is None and problem.fidelity is not None:
        best = select_paused(problem.spec, trials)
    if best is None or problem.latency_table is None or problem.budget.max_latency_ms is None:
        return best
    others = sorted(feasible_trials(trials), key=lambda p: -p.val_accuracy)
    confirmed, checks = confirm_delivered(
        problem, [best] + [p for p in others if p.trial != best.trial]
    )
    if latency_checks is not None:
        latency_checks.extend(checks)
    return confirmed


def accuracy_warnings(problem: PruningProblem, report: Mapping[str, Any]) -> tuple[str, ...]:
    """Return what a user should hear about the delivered model's accuracy.

    The delivered model's test accuracy is compared with the unpruned model's. The
    allowed loss is ``budget.max_accuracy_drop`` when set, else
    :data:`LARGE_ACCURACY_DROP`. Field names are the spec's (``finetune.final_epochs``);
    the CLI renders them as the flags the user typed.
    """
    base, best = report.get("baseline") or {}, report.get("best") or {}
    before, after = base.get("test_accuracy"), best.get("test_accuracy")
    if before is None or after is None:
        return ()
    spec = problem.spec
    allowed = spec.budget.max_accuracy_drop
    limit = allowed if allowed is not None else LARGE_ACCURACY_DROP
    drop = before - after
    if drop <= limit:
        return ()
    loosen = [
        f"budget.{name} (now {value:g})"
        for name in ("flops", "macs", "params", "latency_ms")
        if (value := getattr(spec.budget, name)) is not None
    ]
    if spec.search.compute_epochs is not None:
        compute = spec.search.compute_epochs
        advice = f"give the job more training (search.compute_epochs, now {compute:g})"
    else:
        epochs = spec.finetune.final_epochs
        advice = f"give the final fine-tune more epochs (finetune.final_epochs, now {epochs:g})"
    if loosen:
        advice += " or loosen the budget: " + ", ".join(loosen)
    which = "the allowed" if allowed is not None else "a large"
    return (
        f"test accuracy fell from {before:.2%} to {after:.2%} ({drop * 100:.1f} points), "
        f"more than {which} {limit * 100:.1f} points; {advice}",
    )


def _trial_plan(trials: Sequence[FrozenTrial], number: int) -> dict[str, int] | None:
    for t in trials:
        if t.number == number:
            plan = t.user_attrs.get("plan")
            return dict(plan) if isinstance(plan, dict) else None
    return None


def latency_warnings(problem: PruningProblem, report: Mapping[str, Any]) -> tuple[str, ...]:
    """Return a warning when the delivered model's end-to-end latency is over the
    budget (possible with ``latency.predictor: table`` when no candidate the table
    allowed measured within it)."""
    limit = problem.budget.max_latency_ms
    measured = (report.get("best") or {}).get("latency_ms")
    if limit is None or measured is None or measured <= limit:
        return ()
    where = (report.get("best") or {}).get("latency_device") or "local"
    return (
        f"the delivered model measures {measured:.3f} ms on {where}, over budget.latency_ms "
        f"({limit:g} ms): the layer table underestimated it; set latency.predictor to "
        "measure, or lower budget.latency_ms",
    )


def pareto_png(
    problem: PruningProblem, trials: Sequence[FrozenTrial], final: FinalModel | None
) -> bytes:
    """Return the Pareto plot as PNG bytes, the chosen trial marked with its final
    accuracy beside its search-time one."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_pareto(
            trial_points(trials),
            Path(tmp) / "pareto.png",
            baseline_macs=problem.baseline.cost.macs,
            baseline_accuracy=problem.baseline.val_accuracy,
            chosen=final.trial if final else None,
            chosen_final_accuracy=final.measured.val_accuracy if final else None,
            max_macs=problem.budget.max_macs,
            title=f"{problem.info.arch} on {problem.data.name}",
        )
        return path.read_bytes()


def write_conclusion(conclusion: Conclusion, out_dir: str | Path) -> dict[str, Path]:
    """Write a conclusion's artifacts and report.json into ``out_dir`` (each file
    atomically: a reader never sees half a file).

    Returns:
        File name → path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    files = {
        **conclusion.artifacts,
        "report.json": json.dumps(conclusion.report, indent=2).encode(),
    }
    for name, data in files.items():
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        written[name] = path
    return written


def _report(
    problem: PruningProblem,
    trials: Sequence[FrozenTrial],
    storage: str,
    study_name: str,
    status: str,
    timing: Mapping[str, float],
) -> dict[str, Any]:
    return build_report(
        problem,
        trials,
        baseline=None,
        final=None,
        storage=storage,
        study_name=study_name,
        status=status,
        timing=dict(timing),
    )


def _plot_only(problem: PruningProblem, trials: Sequence[FrozenTrial]) -> dict[str, bytes]:
    if not trial_points(trials):
        return {}
    return {"pareto.png": pareto_png(problem, trials, None)}
