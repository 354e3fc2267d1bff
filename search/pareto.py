"""The accuracy-versus-cost front: non-dominated trials, hypervolume, a plot, the pick."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from search.spec import JobSpec

__all__ = [
    "ParetoPoint",
    "feasible_trials",
    "hypervolume",
    "pareto_front",
    "plot_pareto",
    "select_best",
    "trial_points",
]


@dataclass(frozen=True)
class ParetoPoint:
    """One finished, measured trial as a point of the trade-off."""

    trial: int
    val_accuracy: float
    macs: int
    params: int
    latency_ms: float | None
    feasible: bool
    plan: dict[str, int]
    score: float | None = None
    latency_device: str | None = None
    latency_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the point as API/report JSON."""
        return {
            "trial": self.trial,
            "val_accuracy": self.val_accuracy,
            "macs": self.macs,
            "params": self.params,
            "latency_ms": self.latency_ms,
            "latency_device": self.latency_device,
            "latency_source": self.latency_source,
            "feasible": self.feasible,
            "plan": self.plan,
        }


def trial_points(trials: Sequence[FrozenTrial]) -> list[ParetoPoint]:
    """Return the completed trials that were fine-tuned and measured, as points."""
    points = []
    for t in trials:
        attrs = t.user_attrs
        if t.state != TrialState.COMPLETE or attrs.get("val_accuracy") is None:
            continue
        points.append(
            ParetoPoint(
                trial=t.number,
                val_accuracy=float(attrs["val_accuracy"]),
                macs=int(attrs["macs"]),
                params=int(attrs["params"]),
                latency_ms=attrs.get("latency_ms"),
                feasible=all(v <= 0 for v in t.constraints.values()),
                plan=dict(attrs.get("plan", {})),
                score=t.values[0] if t.values else None,
                latency_device=attrs.get("latency_device"),
                latency_source=attrs.get("latency_source"),
            )
        )
    return points


def feasible_trials(trials: Sequence[FrozenTrial]) -> list[ParetoPoint]:
    """Return the measured trials that meet every constraint."""
    return [p for p in trial_points(trials) if p.feasible]


def _losses(points: Sequence[ParetoPoint], with_latency: bool) -> np.ndarray:
    rows = []
    for p in points:
        row = [-p.val_accuracy, float(p.macs)]
        if with_latency:
            row.append(p.latency_ms if p.latency_ms is not None else math.inf)
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(rows), 3 if with_latency else 2)


def pareto_front(points: Sequence[ParetoPoint], *, with_latency: bool = False) -> list[ParetoPoint]:
    """Return the points no other point beats on accuracy, MACs (and latency), by MACs."""
    if not points:
        return []
    losses = _losses(points, with_latency)
    front = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(losses <= losses[i], axis=1) & np.any(losses < losses[i], axis=1))
        if not dominated:
            front.append(p)
    unique = {(p.val_accuracy, p.macs, p.latency_ms): p for p in front}
    return sorted(unique.values(), key=lambda p: (p.macs, -p.val_accuracy))


def hypervolume(
    points: Sequence[ParetoPoint],
    baseline_macs: int,
    *,
    with_latency: bool = False,
    baseline_latency_ms: float | None = None,
) -> float:
    """Return the hypervolume of the front in (1 - accuracy, MACs ratio[, latency ratio]).

    The reference point is (1, 1[, 1]): zero accuracy at the unpruned model's cost, so the
    value is in [0, 1] and larger is better.
    """
    front = pareto_front(points, with_latency=with_latency)
    if not front:
        return 0.0
    rows = []
    for p in front:
        row = [1.0 - p.val_accuracy, p.macs / baseline_macs]
        if with_latency:
            if p.latency_ms is None or not baseline_latency_ms:
                continue
            row.append(p.latency_ms / baseline_latency_ms)
        rows.append(row)
    if not rows:
        return 0.0
    data = np.minimum(np.asarray(rows, dtype=float), 1.0)
    reference = np.ones(data.shape[1])
    return float(compute_hypervolume(data, reference))


def select_best(spec: JobSpec, trials: Sequence[FrozenTrial]) -> ParetoPoint | None:
    """Return the trial to finalize, or None if no measured trial meets the budget.

    constrained: the most accurate feasible trial (with only an accuracy floor: the
    smallest feasible one); scalar: the highest score; pareto: the most accurate
    feasible trial when a resource budget is set, else the front's knee (the point
    closest to perfect accuracy at zero cost, both axes scaled to the front's range).
    """
    points = trial_points(trials)
    feasible = [p for p in points if p.feasible]
    if spec.objective == "scalar":
        scored = [p for p in points if p.score is not None]
        return max(scored, key=lambda p: (p.score or 0.0, -p.macs)) if scored else None
    if not feasible:
        return None
    if spec.objective == "constrained" and not spec.budget.has_resource_limit:
        return min(feasible, key=lambda p: (p.macs, -p.val_accuracy))
    if spec.objective == "constrained" or spec.budget.has_resource_limit:
        return max(feasible, key=lambda p: (p.val_accuracy, -p.macs))
    return _knee(pareto_front(feasible, with_latency=spec.measures_latency))


def _knee(front: Sequence[ParetoPoint]) -> ParetoPoint:
    accs = np.array([p.val_accuracy for p in front])
    macs = np.array([p.macs for p in front], dtype=float)
    acc_span = max(accs.max() - accs.min(), 1e-12)
    macs_span = max(macs.max() - macs.min(), 1e-12)
    distance = ((accs.max() - accs) / acc_span) ** 2 + ((macs - macs.min()) / macs_span) ** 2
    return front[int(np.argmin(distance))]


def plot_pareto(
    points: Sequence[ParetoPoint],
    path: str | Path,
    *,
    baseline_macs: int,
    baseline_accuracy: float,
    chosen: int | None = None,
    chosen_final_accuracy: float | None = None,
    max_macs: int | None = None,
    title: str = "",
) -> Path:
    """Draw validation accuracy against MACs for every measured trial and save a PNG.

    MACs are a percentage of the unpruned model's (the axis label gives that count).
    The front is joined by a line, infeasible trials are crosses, the unpruned baseline
    is a star, a MACs budget is a dashed vertical line, and points carry their trial
    numbers. Every trial's accuracy is its search-time one (after the trial's short
    fine-tune); the chosen trial is ringed, and its final accuracy (after the final
    fine-tune), when given, is a diamond joined to it.

    Args:
        points: the measured trials (:func:`trial_points`).
        path: where the PNG goes (its folder is created).
        baseline_macs: MACs of the unpruned model (100 % on the axis).
        baseline_accuracy: validation accuracy of the unpruned model.
        chosen: the trial delivered, if one is.
        chosen_final_accuracy: its validation accuracy after the final fine-tune.
        max_macs: the MACs budget, if there is one.
        title: the plot's title.

    Returns:
        ``path`` as a :class:`Path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import PercentFormatter

    def share(macs: float) -> float:
        return 100.0 * macs / baseline_macs if baseline_macs else 0.0

    target = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    try:
        feasible = [p for p in points if p.feasible]
        infeasible = [p for p in points if not p.feasible]
        front = pareto_front(feasible)
        if feasible:
            ax.scatter(
                [share(p.macs) for p in feasible],
                [p.val_accuracy for p in feasible],
                s=18,
                color="#7f8c8d",
                alpha=0.7,
                label="trials: search-time accuracy (after the trial's short fine-tune)",
            )
        if infeasible:
            ax.scatter(
                [share(p.macs) for p in infeasible],
                [p.val_accuracy for p in infeasible],
                s=22,
                marker="x",
                color="#c0392b",
                alpha=0.7,
                label="over budget",
            )
        if front:
            ax.plot(
                [share(p.macs) for p in front],
                [p.val_accuracy for p in front],
                "-o",
                color="#2471a3",
                markersize=5,
                label="Pareto front",
            )
        ax.scatter(
            [100.0],
            [baseline_accuracy],
            marker="*",
            s=160,
            color="#f39c12",
            zorder=5,
            label="unpruned",
        )
        picked = next((p for p in points if p.trial == chosen), None)
        extra: list[tuple[float, float]] = []
        if picked is not None:
            ax.scatter(
                [share(picked.macs)],
                [picked.val_accuracy],
                s=160,
                facecolors="none",
                edgecolors="#27ae60",
                linewidths=2,
                zorder=6,
                label=f"chosen trial {picked.trial}: search-time accuracy",
            )
            if chosen_final_accuracy is not None:
                x = share(picked.macs)
                ax.plot(
                    [x, x],
                    [picked.val_accuracy, chosen_final_accuracy],
                    ":",
                    color="#27ae60",
                    linewidth=1.5,
                    zorder=6,
                )
                ax.scatter(
                    [x],
                    [chosen_final_accuracy],
                    marker="D",
                    s=70,
                    color="#27ae60",
                    edgecolors="black",
                    linewidths=0.8,
                    zorder=7,
                    label=f"chosen trial {picked.trial}: final accuracy "
                    "(after the final fine-tune)",
                )
                extra += [
                    (x, a) for a in np.linspace(picked.val_accuracy, chosen_final_accuracy, 8)
                ]
        if max_macs is not None:
            ax.axvline(
                share(max_macs),
                linestyle="--",
                color="#555555",
                linewidth=1,
                label="MACs budget",
            )
        ax.set_xlabel(f"MACs, % of the unpruned model ({_millions(baseline_macs)} MACs at batch 1)")
        ax.set_ylabel("validation top-1 accuracy")
        ax.xaxis.set_major_formatter(PercentFormatter(100.0, decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_title(title or "accuracy vs compute")
        ax.grid(True, alpha=0.3)
        for a, b in zip(front, front[1:], strict=False):  # keep numbers off the front's line
            extra += [
                (
                    share(a.macs) + f * share(b.macs - a.macs),
                    a.val_accuracy + f * (b.val_accuracy - a.val_accuracy),
                )
                for f in np.linspace(0.1, 0.9, 5)
            ]
        _label_trials(
            ax, [(share(p.macs), p.val_accuracy, p.trial) for p in points], extra, ringed=chosen
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, ncol=2)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, bbox_inches="tight")
    finally:
        plt.close(fig)
    return target


def _millions(macs: float) -> str:
    return f"{macs / 1e6:.2f}M" if macs >= 1e5 else f"{macs:,.0f}"


_LABEL_OFFSETS = ((5, 4), (5, -11), (-5, 4), (-5, -11), (0, 9), (0, -16), (10, -4), (-10, -4))
"""Where a trial number may go, in points from its marker, in order of preference."""


def _label_trials(
    ax: Any,
    points: Sequence[tuple[float, float, int]],
    others: Sequence[tuple[float, float]],
    *,
    ringed: int | None = None,
) -> None:
    """Write each point's trial number beside it, where it covers the fewest labels,
    markers (the ``ringed`` trial's is larger) and ``others`` (points of lines) already
    there: a greedy search over a few offsets."""
    ax.autoscale_view()
    to_pixels = ax.transData.transform
    scale = ax.figure.dpi / 72.0  # points → pixels
    markers = [(*to_pixels((x, y)), 11 * scale if t == ringed else 4) for x, y, t in points]
    markers += [(*to_pixels(xy), 4) for xy in others]
    taken: list[tuple[float, float, float, float]] = []
    for (x, y, trial), (px, py, _) in zip(points, markers, strict=False):
        text = str(trial)
        width, height = (4.3 * len(text) + 1) * scale, 8 * scale
        best: tuple[float, tuple[int, int], tuple[float, float, float, float]] | None = None
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx * scale - (width if dx < 0 else width / 2 if dx == 0 else 0)
            box = (left, py + dy * scale, left + width, py + dy * scale + height)
            clash = sum(_overlap(box, other) for other in taken) + sum(
                _overlap(box, (mx - r, my - r, mx + r, my + r)) for mx, my, r in markers
            )
            if best is None or clash < best[0]:
                best = (clash, (dx, dy), box)
            if clash == 0:
                break
        assert best is not None
        (dx, dy), box = best[1], best[2]
        taken.append(box)
        ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=7,
            color="#34495e",
            ha="right" if dx < 0 else "center" if dx == 0 else "left",
            va="bottom",
        )


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def trials_of(study: optuna.Study) -> list[FrozenTrial]:
    """Return every trial of ``study`` without copying."""
    return study.get_trials(deepcopy=False)
