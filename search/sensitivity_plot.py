"""A picture of a sensitivity scan: accuracy against the kept fraction, a line per group."""

from __future__ import annotations

from pathlib import Path

from search.sensitivity_record import Sensitivity

__all__ = ["plot_sensitivity"]


def plot_sensitivity(sensitivity: Sensitivity, path: str | Path, *, title: str = "") -> Path:
    """Draw each group's validation accuracy against the fraction of channels it keeps.

    Every line starts at the full width (kept fraction 1) at the reference accuracy
    (the unpruned model after the same BatchNorm recalibration); the steeper a line
    falls, the more that group costs to narrow. The unpruned model's accuracy as
    trained is a dotted line.

    Args:
        sensitivity: the scan.
        path: where the PNG goes (its folder is created).
        title: the plot's title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import PercentFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        cmap = plt.get_cmap("tab20")  # distinct colours; cycles after 20 groups
        for i, group in enumerate(sensitivity.groups):
            points = sorted(group.points, key=lambda p: -p.width)
            kept = [1.0] + [p.width / group.channels for p in points]
            accuracy = [sensitivity.reference_accuracy] + [p.val_accuracy for p in points]
            axes.plot(
                kept,
                accuracy,
                marker="o",
                markersize=3,
                linewidth=1.2,
                color=cmap(i % 20),
                label=f"{group.name} ({group.channels})",
            )
        axes.axhline(
            sensitivity.baseline_accuracy,
            color="grey",
            linestyle=":",
            linewidth=1,
            label="unpruned, as trained",
        )
        axes.set_xlim(1.02, 0.0)  # narrower to the right, as pruning goes
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        axes.set_xlabel("channels kept in the one narrowed group")
        axes.set_ylabel("validation accuracy after BN recalibration")
        axes.set_title(title or f"sensitivity per group (criterion {sensitivity.criterion})")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower left", ncol=2 if len(sensitivity.groups) > 12 else 1)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
