"""Part (b) of ``seed_methods.py``: the pruning schedules at equal epochs and widths.

Every schedule of :mod:`models.schedules` prunes the same trained baseline to the same
plan (Torch-Pruning's uniform ``pruning_ratio``, rounded to ``round_to``) while it is
fine-tuned for the same number of epochs, through the library call behind
``inferprune apply --schedule NAME --finetune-epochs E`` (:func:`search.apply_once`).
Only the path to the plan differs: when channels go, how many at a time, and by which
criterion. Test accuracy is measured on the seed's test split, which nothing before saw.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _machine import Interference, machine
from _seed_common import BASE_EPOCHS, FASHION_ROOT, QUICK_BASE_EPOCHS, SHAPE, baselines

from models.data import load_dataset
from models.schedules import ScheduleConfig
from models.train import evaluate
from search import apply_once

__all__ = [
    "SCHEDULE_RUNS",
    "ScheduleBench",
    "add_arguments",
    "markdown",
    "run",
    "run_schedule",
    "with_longer",
]

logger = logging.getLogger("benchmarks.seed_methods")

SCHEDULE_RUNS: dict[str, ScheduleConfig] = {
    "one_shot": ScheduleConfig("one_shot"),
    "iterative": ScheduleConfig("iterative", steps=4),
    "saliency→similarity": ScheduleConfig("iterative", steps=4, criteria=("taylor", "fpgm")),
    "dropnet": ScheduleConfig("dropnet"),
    "agp": ScheduleConfig("agp"),
    "one_cycle": ScheduleConfig("one_cycle"),
    "while_training": ScheduleConfig("while_training"),
    "adaptive": ScheduleConfig("adaptive", max_accuracy_drop=0.02),
}
"""Label → schedule. ``iterative`` and ``saliency→similarity`` take the same 4 rounds; the
latter ranks by taylor in the first two and by fpgm in the last two."""


@dataclass(frozen=True)
class ScheduleBench:
    """Settings every schedule shares (only the schedule differs)."""

    arch: str
    input_shape: tuple[int, int, int]
    ratio: float
    round_to: int
    criterion: str
    finetune_epochs: float
    lr: float


def run_schedule(
    bench: ScheduleBench,
    label: str,
    *,
    dataset: str,
    data_root: str | None,
    weights: Path,
    seed: int,
    wait: Callable[[], None],
) -> dict[str, Any]:
    """Prune ``weights`` along the schedule ``label`` and return its numbers."""
    wait()
    started = time.perf_counter()
    result = apply_once(
        arch=bench.arch,
        weights=weights,
        ratio=bench.ratio,
        criterion=bench.criterion,
        dataset=dataset,
        data_root=Path(data_root) if data_root else None,
        finetune_epochs=bench.finetune_epochs,
        lr=bench.lr,
        round_to=bench.round_to,
        seed=seed,
        device="cpu",
        schedule=SCHEDULE_RUNS[label],
    )
    seconds = time.perf_counter() - started
    data = load_dataset(
        dataset,
        input_shape=bench.input_shape,
        num_classes=result.info.num_classes,
        root=data_root,
        seed=seed,
    )
    record = result.to_dict()
    return {
        "schedule": label,
        "seed": seed,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": evaluate(result.model, data.test).top1,
        "seconds": round(seconds, 2),
        "macs_ratio": record["macs_ratio"],
        "params_ratio": record["params_ratio"],
        "plan": record["plan"],
        "moves": record["schedule"].get("moves", []),
        "decisions": record["schedule"].get("decisions", []),
    }


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _column(cell: dict[str, Any], label: str) -> tuple[list[dict[str, Any]], str, str]:
    """Return the runs of ``label`` in ``cell``, their test accuracy and the mean paired
    difference to one_shot (empty for one_shot itself)."""
    runs = cell["runs"]
    mine = [r for r in runs if r["schedule"] == label]
    if not mine:
        return [], "", ""
    one_shot = {r["seed"]: r["test_accuracy"] for r in runs if r["schedule"] == "one_shot"}
    diffs = [r["test_accuracy"] - one_shot[r["seed"]] for r in mine if r["seed"] in one_shot]
    delta = f"{100 * statistics.mean(diffs):+.2f}" if label != "one_shot" and diffs else ""
    return mine, _mean_std([r["test_accuracy"] for r in mine]), delta


def markdown(report: dict[str, Any]) -> str:
    """Return the report's markdown tables, one per data set.

    A report may hold ``longer``: the same runs at more fine-tune epochs (``settings``,
    ``seeds``, ``datasets`` and ``seconds`` of a run with ``--epochs``), shown as two
    more columns; and ``notes``: paragraphs printed under the tables.
    """
    bench = report["settings"]
    longer = report.get("longer")
    more = f" (and {longer['settings']['finetune_epochs']:g})" if longer else ""
    lines = [
        "# Pruning schedules at equal fine-tune epochs and equal final widths",
        "",
        f"`{bench['arch']}` at {'x'.join(map(str, bench['input_shape']))}, every group "
        f"pruned by the uniform ratio {bench['ratio']} (round_to {bench['round_to']}, "
        f"criterion {bench['criterion']} unless the schedule fixes its own) while it is "
        f"fine-tuned {bench['finetune_epochs']:g}{more} epochs (lr {bench['lr']}, cosine, "
        "batch 64), through `inferprune apply --schedule NAME`'s library call. The "
        "schedules that cut as they go make their cuts within the first half of the "
        "fine-tune and train the second half at the plan's widths: along one decay for "
        "agp and one_cycle; as the last, longest round for iterative, dropnet and "
        "adaptive, whose rounds each restart the decay. while_training is soft filter "
        "pruning: the plan's worth of channels zeroed at each of 10 intervals and trained "
        "on, the model cut physically after the last step. `s / run` is one run's wall "
        "time (the total below also holds the waits for the machine's quiet file). Test "
        "accuracy in %, mean ± std over seeds "
        f"{', '.join(map(str, report['seeds']))}; Δ is the mean paired difference to "
        "one_shot on the same seed (same baseline, same split). Written by "
        "`benchmarks/seed_methods.py --part schedules`.",
        "",
    ]
    for name, cell in report["datasets"].items():
        runs = cell["runs"]
        base = [b["test_accuracy"] for b in cell["baselines"].values()]
        macs = runs[0]["macs_ratio"] if runs else float("nan")
        short = f", {bench['finetune_epochs']:g} ep." if longer else ""
        header = (
            f"| schedule | test acc.{short} (%) | Δ vs one_shot (points) | val acc. (%) | s / run |"
        )
        rule = "|---|---|---|---|---|"
        if longer:
            epochs = f"{longer['settings']['finetune_epochs']:g} ep."
            header += f" test acc., {epochs} (%) | Δ, {epochs} |"
            rule += "---|---|"
        lines += [
            f"## {name}",
            "",
            f"Unpruned baseline: test {_mean_std(base)} %; the plan keeps "
            f"{100 * macs:.1f} % of the MACs and {100 * runs[0]['params_ratio']:.1f} % of "
            "the parameters.",
            "",
            header,
            rule,
        ]
        for label in report["schedules"]:
            mine, test, delta = _column(cell, label)
            if not mine:
                continue
            val = _mean_std([r["val_accuracy"] for r in mine])
            secs = statistics.mean(r["seconds"] for r in mine)
            row = f"| {label} | {test} | {delta} | {val} | {secs:.1f} |"
            if longer:
                _, long_test, long_delta = _column(longer["datasets"][name], label)
                row += f" {long_test} | {long_delta} |"
            lines.append(row)
        lines.append("")
    machine = report["machine"]
    total = f"Total {report['seconds']:.0f} s"
    if longer:
        total += (
            f"; the {longer['settings']['finetune_epochs']:g}-epoch runs (seeds "
            f"{', '.join(map(str, longer['seeds']))}) took {longer['seconds']:.0f} s, at the "
            "same time as these"
        )
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch threads "
        f"{machine['torch_threads']}, torch {machine['libraries']['torch']}, "
        f"{machine['date']}; other processes took {report['interference_cores']} cores on "
        f"average during the run. {total}.",
        "",
    ]
    for note in report.get("notes", []):
        lines += [note, ""]
    return "\n".join(lines)


def with_longer(report: dict[str, Any], longer: dict[str, Any]) -> dict[str, Any]:
    """Return ``report`` with the runs of ``longer`` (the same part at more epochs, same
    baselines) under ``longer``, for :func:`markdown`'s extra columns."""
    keep = ("settings", "seeds", "schedules", "datasets", "seconds", "interference_cores")
    return {**report, "longer": {k: longer[k] for k in keep}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this part's options."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=6.0, help="fine-tune epochs")
    parser.add_argument("--ratio", type=float, default=0.75, help="uniform pruning ratio")
    parser.add_argument("--schedules", nargs="+", choices=list(SCHEDULE_RUNS))
    parser.add_argument("--train-subset", type=int, default=3000)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("--fashion-root", default=FASHION_ROOT)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "inferprune-bench"
    )


def run(args: argparse.Namespace, wait: Callable[[], None]) -> dict[str, Any]:
    """Run every schedule on every data set and seed; return the report."""
    quick = bool(getattr(args, "quick", False))
    seeds, epochs = ([0], 1.0) if quick else (args.seeds, args.epochs)
    base_epochs = QUICK_BASE_EPOCHS if quick else BASE_EPOCHS
    bench = ScheduleBench(
        arch="resnet20_cifar",
        input_shape=SHAPE,
        ratio=args.ratio,
        round_to=4,
        criterion="l1",
        finetune_epochs=epochs,
        lr=0.01,
    )
    labels = args.schedules or list(SCHEDULE_RUNS)
    started, interference = time.perf_counter(), Interference()
    cells: dict[str, Any] = {}
    for base in baselines(args, seeds, base_epochs, wait, arch=bench.arch):
        cell = cells.setdefault(base.label, {"dataset": base.dataset, "baselines": {}, "runs": []})
        cell["baselines"][str(base.seed)] = {
            "test_accuracy": base.report.get("test_accuracy"),
            "weights_sha256": base.report.get("weights_sha256"),
            "epochs": base.epochs,
        }
        for schedule in labels:
            result = run_schedule(
                bench, schedule, dataset=base.dataset, data_root=None, weights=base.weights,
                seed=base.seed, wait=wait,
            )  # fmt: skip
            logger.info(
                "%s seed %d %s: test %.4f (%.1fs)",
                base.label, base.seed, schedule, result["test_accuracy"], result["seconds"],
            )  # fmt: skip
            cell["runs"].append(result)
    return {
        "part": "schedules",
        "settings": {**vars(bench), "base_epochs": base_epochs},
        "seeds": seeds,
        "schedules": labels,
        "datasets": cells,
        "seconds": time.perf_counter() - started,
        "interference_cores": interference.cores(),
        "machine": machine(),
    }
