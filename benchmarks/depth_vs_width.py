"""Would removing residual blocks beat width-only pruning at the same MACs and compute?

An experiment for issue 11, not a product feature yet: the product's plans only narrow
channel groups, so a deep net pruned to a few percent of its MACs keeps every block at a
sliver of its width (resnet56 at 6.25 %: 4 to 16 channels per layer over 55 layers).
This script removes whole residual blocks first (``models.prune.remove_blocks``: a block
whose shortcut is the identity computes ``relu(x + branch(x))``; with ``x`` already the
output of a ReLU, replacing it by ``nn.Identity`` is the same as zeroing its branch),
keeping ``K`` of each stage's blocks evenly spread (the first, downsampling one always),
then gives the remaining
layers the uniform width that meets the same MACs budget (as a fraction of the *unpruned*
model) and trains the result exactly as ``search_quality.py --compute-epochs`` trains a
one-shot method: ``search.final.finalize`` with the whole compute as fine-tune epochs,
from the same cached baseline, data subset and seed.

Compare the rows with ``search_quality.py``'s one-shot methods and searches on the same
baseline: ``--compare REPORT.json`` adds their test accuracy and the paired difference.

    .venv/bin/python benchmarks/depth_vs_width.py --seeds 1 --budgets 0.0625 --keep 3 5 \\
        --compare /tmp/sq-out/s1_b0625.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _machine import machine
from _quality_baselines import add_resnet56_arguments, baseline_of, same_baseline, subset_of
from _quality_report import write_report
from _quality_settings import Settings
from torch import nn

from models.cost import measure_cost
from models.prune import removable_blocks, remove_blocks
from search import finalize, load_problem
from search.loading import problem_from_model

logger = logging.getLogger("benchmarks.depth_vs_width")

STAGES = ("layer1", "layer2", "layer3")
"""The CIFAR ResNets' stages (``models.zoo._cifar.CifarResNet``)."""


def kept_blocks(blocks: int, keep: int) -> list[int]:
    """Return the indices of ``keep`` of ``blocks`` blocks, evenly spread, block 0 first.

    >>> kept_blocks(9, 3), kept_blocks(9, 5), kept_blocks(9, 9)
    ([0, 4, 8], [0, 2, 4, 6, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8])
    """
    if not 1 <= keep <= blocks:
        raise ValueError(f"keep must be in [1, {blocks}], got {keep}")
    if keep == 1:
        return [0]
    return sorted({round(i * (blocks - 1) / (keep - 1)) for i in range(keep)})


def blocks_to_remove(model: nn.Module, input_shape: Sequence[int], keep: int) -> list[str]:
    """Return the blocks of a CIFAR ResNet that go when ``keep`` per stage stay (evenly
    spread, the first always), checked against ``models.prune.removable_blocks``.

    Raises:
        ValueError: a block that would go is not removable (it changes the shape).
    """
    removable = set(removable_blocks(model, input_shape))
    names = []
    for stage_name in STAGES:
        blocks = len(getattr(model, stage_name))
        kept = set(kept_blocks(blocks, keep))
        names += [f"{stage_name}.{i}" for i in range(blocks) if i not in kept]
    if not set(names) <= removable:
        raise ValueError(f"not removable: {sorted(set(names) - removable)}")
    return names


def run(args: argparse.Namespace, on_run: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train every (seed, budget, keep) and return the report; ``on_run(report)`` after
    each, with the runs so far (so that an interrupted run keeps what it finished)."""
    dataset = subset_of(args)
    settings = Settings(
        trials=16,
        epochs_per_trial=0.5,
        final_epochs=args.compute_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        criterion=args.criterion,
        round_to=args.round_to,
        base_epochs=args.base_epochs,
        dataset=dataset,
        input_shape=args.input_shape,
        data_root=args.data_root,
        arch=args.arch,
        compute_epochs=args.compute_epochs,
    )
    runs: list[dict[str, Any]] = []
    baselines: dict[int, dict[str, Any]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        weights, trained = baseline_of(args, seed, dataset)
        baselines[seed] = trained
        for budget in args.budgets:
            spec = settings.spec(budget, seed, "tpe", args.compute_epochs)
            base = load_problem(spec, weights=weights, data_root=args.data_root)
            full = base.baseline.cost
            for keep in args.keep:
                began = time.perf_counter()
                model = remove_blocks(
                    base.model, blocks_to_remove(base.model, base.info.input_shape, keep)
                )
                depth_macs = measure_cost(model, base.info.input_shape).macs
                # the same budget in MACs, as a fraction of the reduced model
                budget_spec = spec.budget.model_copy(
                    update={"flops": budget * full.macs / depth_macs}
                )
                problem = problem_from_model(
                    spec.model_copy(update={"budget": budget_spec}),
                    model,
                    base.info,
                    base.data,
                    pretrained=True,
                    device=torch.device("cpu"),
                )
                plan = problem.space.uniform_at_budget()
                final = finalize(problem, plan, 0)
                measured = final.measured
                run = {
                    "seed": seed,
                    "budget": budget,
                    "keep": keep,
                    "blocks_kept": {
                        s: kept_blocks(len(getattr(base.model, s)), keep) for s in STAGES
                    },
                    "depth_macs_ratio": depth_macs / full.macs,
                    "val_accuracy_blocks_removed": problem.baseline.val_accuracy,
                    "macs_ratio": measured.cost.macs / full.macs,
                    "params": measured.cost.params,
                    "val_accuracy": measured.val_accuracy,
                    "test_accuracy": measured.test_accuracy,
                    "latency_ms": measured.latency.median_ms,
                    "final_epochs": final.final_epochs,
                    "plan": plan.to_dict(),
                    "wall_s": round(time.perf_counter() - began, 1),
                }
                runs.append(run)
                on_run(report(settings, args, baselines, runs, started))
                logger.info(
                    "seed %d budget %.4f keep %d: MACs %.4f test %.4f val %.4f (%.0f s)",
                    seed,
                    budget,
                    keep,
                    run["macs_ratio"],
                    run["test_accuracy"],
                    run["val_accuracy"],
                    run["wall_s"],
                )
    return report(settings, args, baselines, runs, started)


def report(
    settings: Settings,
    args: argparse.Namespace,
    baselines: dict[int, dict[str, Any]],
    runs: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """Return the report of ``runs`` (machine, settings, baselines, compared rows)."""
    payload = {
        "benchmark": "depth_vs_width",
        "machine": machine(),
        "settings": {
            "arch": args.arch,
            "dataset": settings.dataset,
            "compute_epochs": args.compute_epochs,
            "base_epochs": args.base_epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "criterion": args.criterion,
            "round_to": args.round_to,
            "seeds": args.seeds,
            "budgets": args.budgets,
            "keep": args.keep,
        },
        "baselines": {str(s): b for s, b in baselines.items()},
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": list(runs),
    }
    payload["compared"] = compare(payload, [json.loads(p.read_text()) for p in args.compare])
    return payload


def compare(payload: dict[str, Any], reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return, per depth run, the same seed and budget's runs of ``search_quality``
    reports (their method, test accuracy and the paired difference in points), after
    checking that both started from the same baseline weights."""
    others: dict[tuple[int, float], dict[str, float]] = {}
    for report in reports:
        for seed, baseline in report["baselines"].items():
            mine = payload["baselines"].get(seed)
            if mine and not same_baseline({"train": mine}, baseline):
                raise ValueError(f"seed {seed}: the reports trained different baselines")
        for r in report["runs"]:
            if r.get("reachable"):
                others.setdefault((r["seed"], r["budget"]), {})[r["method"]] = r["test_accuracy"]
    rows = []
    for run in payload["runs"]:
        for method, accuracy in sorted(others.get((run["seed"], run["budget"]), {}).items()):
            rows.append(
                {
                    "seed": run["seed"],
                    "budget": run["budget"],
                    "keep": run["keep"],
                    "method": method,
                    "method_test_accuracy": accuracy,
                    "depth_minus_method_points": (run["test_accuracy"] - accuracy) * 100,
                }
            )
    return rows


def markdown(payload: dict[str, Any]) -> str:
    """Return the report's tables."""
    s, m = payload["settings"], payload["machine"]
    lines = [
        "# Depth vs width: removing residual blocks before narrowing the rest",
        "",
        f"{s['arch']} on `{s['dataset']}`; machine {m['cpu']}, {m['cores']} cores, torch on "
        f"1 thread; finished {m['finished_at']}; total wall time {payload['wall_s'] / 60:.1f} "
        f"min. Every row trains {s['compute_epochs']:g} epochs from the unpruned baseline "
        f"({s['base_epochs']} epochs) exactly as `search_quality.py --compute-epochs` trains "
        "a one-shot method (lr "
        f"{s['lr']}, batch {s['batch_size']}, criterion {s['criterion']}, round_to "
        f"{s['round_to']}). *keep*: residual blocks kept per stage (of 9 in resnet56), evenly "
        "spread; the rest of the budget goes to uniform widths. *blocks removed, val*: "
        "accuracy of the block-removed model before any BatchNorm recalibration or "
        "training. MACs as a fraction of the unpruned model's.",
        "",
        "| seed | MACs budget | keep | MACs of the kept blocks | MACs | params K | blocks "
        "removed, val % | val % | test % | latency ms | wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["runs"]:
        lines.append(
            f"| {r['seed']} | {r['budget']:g} | {r['keep']} | {r['depth_macs_ratio']:.3f} | "
            f"{r['macs_ratio']:.4f} | {r['params'] / 1e3:.1f} | "
            f"{r['val_accuracy_blocks_removed'] * 100:.2f} | {r['val_accuracy'] * 100:.2f} | "
            f"{r['test_accuracy'] * 100:.2f} | {r['latency_ms']:.3f} | {r['wall_s']:.0f} |"
        )
    if payload.get("compared"):
        lines += [
            "",
            "## Against `search_quality.py` on the same baselines",
            "",
            "| seed | MACs budget | keep | method | method test % | depth − method (pts) |",
            "|---:|---:|---:|---|---:|---:|",
        ]
        for c in payload["compared"]:
            lines.append(
                f"| {c['seed']} | {c['budget']:g} | {c['keep']} | {c['method']} | "
                f"{c['method_test_accuracy'] * 100:.2f} | {c['depth_minus_method_points']:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the defaults are issue 11's resnet56 configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_resnet56_arguments(parser)
    parser.add_argument("--compute-epochs", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.125, 0.0625])
    parser.add_argument(
        "--keep", type=int, nargs="+", default=[3, 5, 7], help="blocks kept per stage"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        help="search_quality reports on the same baselines",
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="depth_vs_width")
    parser.add_argument(
        "--compare-only",
        action="store_true",
        help="train nothing: recompute NAME.json's comparison with the --compare reports "
        "and rewrite NAME.json and NAME.md",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiment and write NAME.json and NAME.md."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def write(payload: dict[str, Any]) -> None:
        write_report(payload, args.out_dir, args.name, render=markdown)

    if args.compare_only:
        payload = json.loads((args.out_dir / f"{args.name}.json").read_text())
        payload["compared"] = compare(payload, [json.loads(p.read_text()) for p in args.compare])
        write(payload)
    else:
        write(run(args, on_run=write))
    logger.info("wrote %s", args.out_dir / f"{args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
