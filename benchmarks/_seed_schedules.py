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
from search_quality import ensure_baseline, make_subset

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
]

logger = logging.getLogger("benchmarks.seed_methods")

SHAPE = (1, 16, 16)
FASHION_ROOT = "/usr/share/datasets"
BASE_EPOCHS = {"digits": 30, "fashion_mnist": 15}
QUICK_BASE_EPOCHS = {"digits": 2, "fashion_mnist": 1}

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


def markdown(report: dict[str, Any]) -> str:
    """Return the report's markdown tables, one per data set."""
    bench = report["settings"]
    lines = [
        "# Pruning schedules at equal fine-tune epochs and equal final widths",
        "",
        f"`{bench['arch']}` at {'x'.join(map(str, bench['input_shape']))}, every group "
        f"pruned by the uniform ratio {bench['ratio']} (round_to {bench['round_to']}, "
        f"criterion {bench['criterion']} unless the schedule fixes its own) while it is "
        f"fine-tuned {bench['finetune_epochs']} epochs (lr {bench['lr']}, cosine: one decay "
        "over the whole fine-tune for the gradual schedules, one per round for iterative, "
        "dropnet and adaptive), through `inferprune apply --schedule NAME`'s library call "
        "(batch 64). `s / run` is one run's wall time (the total below also holds the waits "
        "for the machine's quiet file). Test "
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
        lines += [
            f"## {name}",
            "",
            f"Unpruned baseline: test {_mean_std(base)} %; the plan keeps "
            f"{100 * macs:.1f} % of the MACs and {100 * runs[0]['params_ratio']:.1f} % of "
            "the parameters.",
            "",
            "| schedule | test acc. (%) | Δ vs one_shot (points) | val acc. (%) | s / run |",
            "|---|---|---|---|---|",
        ]
        one_shot = {r["seed"]: r["test_accuracy"] for r in runs if r["schedule"] == "one_shot"}
        for label in report["schedules"]:
            mine = [r for r in runs if r["schedule"] == label]
            if not mine:
                continue
            test = [r["test_accuracy"] for r in mine]
            diffs = [
                r["test_accuracy"] - one_shot[r["seed"]] for r in mine if r["seed"] in one_shot
            ]
            delta = f"{100 * statistics.mean(diffs):+.2f}" if label != "one_shot" and diffs else ""
            val = _mean_std([r["val_accuracy"] for r in mine])
            secs = statistics.mean(r["seconds"] for r in mine)
            lines.append(f"| {label} | {_mean_std(test)} | {delta} | {val} | {secs:.1f} |")
        lines.append("")
    machine = report["machine"]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch threads "
        f"{machine['torch_threads']}, torch {machine['libraries']['torch']}, "
        f"{machine['date']}; other processes took {report['interference_cores']} cores on "
        f"average during the run. Total {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


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
    fashion = make_subset(
        "fashion_mnist", SHAPE, args.fashion_root, args.train_subset, args.test_subset,
        args.cache_dir,
    )  # fmt: skip
    started, interference = time.perf_counter(), Interference()
    cells: dict[str, Any] = {}
    for label, dataset in (("digits", "digits"), ("fashion_mnist", fashion)):
        cell: dict[str, Any] = {"dataset": dataset, "baselines": {}, "runs": []}
        for seed in seeds:
            wait()
            weights, base = ensure_baseline(
                seed,
                base_epochs[label],
                args.cache_dir,
                arch=bench.arch,
                dataset=dataset,
                input_shape=SHAPE,
            )
            cell["baselines"][str(seed)] = {
                "test_accuracy": base.get("test_accuracy"),
                "weights_sha256": base.get("weights_sha256"),
                "epochs": base_epochs[label],
            }
            for schedule in labels:
                result = run_schedule(
                    bench, schedule, dataset=dataset, data_root=None, weights=weights,
                    seed=seed, wait=wait,
                )  # fmt: skip
                logger.info(
                    "%s seed %d %s: test %.4f (%.1fs)",
                    label, seed, schedule, result["test_accuracy"], result["seconds"],
                )  # fmt: skip
                cell["runs"].append(result)
        cells[label] = cell
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
