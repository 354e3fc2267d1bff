"""Latency-budget searches: does the delivered model meet the budget end to end, and how
does it compare with the uniform plan that meets the same latency?

For each model, a baseline is trained on a class-balanced Fashion-MNIST subset (padded
to 32x32: MobileNetV2 and EfficientNet need 32 pixels), its median latency is measured
here (onnxruntime, one thread, batch 1), and a search runs with ``budget.latency_ms`` at
``--budget`` (40 %) of it, ``latency.predictor`` as given (``table`` by default: the
layer table projects samples onto the budget; the delivered model is confirmed end to
end), and ``--compute-epochs`` of training in all. The uniform plan is the widest
uniform width fraction whose *measured* latency meets the same budget (bisection, each
step timed end to end), fine-tuned for the same compute. Test accuracy is on images the
search never saw.

Run alone on the machine (latency is measured)::

    .venv/bin/python benchmarks/latency_budget.py --data-root /usr/share/datasets
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from _machine import Interference, machine
from _quality_baselines import ensure_baseline

from models.data import load_dataset
from models.prune import Plan
from search import (
    JobSpec,
    MemoryCheckpoints,
    PruningProblem,
    build_candidate,
    conclude_search,
    finalize,
    job_sensitivity,
    load_problem,
    open_study,
    planned_trials,
    run_search,
)

logger = logging.getLogger("benchmarks.latency_budget")

INPUT_SHAPE = (1, 32, 32)
LATENCY = {"backend": "onnxruntime", "threads": 1, "batch_size": 1, "warmup": 10, "repeats": 50}


def padded_subset(root: str, train: int, test: int, cache: Path) -> str:
    """Write a class-balanced Fashion-MNIST subset, padded to 32x32, as ``.npz``."""
    path = cache / f"fashion_mnist32-train{train}-test{test}.npz"
    if path.exists():
        return f"npz:{path}"
    splits = load_dataset("fashion_mnist", input_shape=(1, 28, 28), root=root, seed=0)
    rng = np.random.default_rng(0)

    def pick(parts: Sequence[Any], count: int) -> tuple[np.ndarray, np.ndarray]:
        images = np.concatenate([p.images.numpy() for p in parts])
        labels = np.concatenate([p.labels.numpy() for p in parts])
        chosen = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[: count // 10] for c in range(10)]
        )
        padded = np.pad(images[chosen], ((0, 0), (0, 0), (2, 2), (2, 2)))
        return padded, labels[chosen]

    x_train, y_train = pick([splits.train, splits.val], train)
    x_test, y_test = pick([splits.test], test)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return f"npz:{path}"


def _spec(arch: str, dataset: str, args: argparse.Namespace, latency_ms: float) -> JobSpec:
    return JobSpec.model_validate(
        {
            "arch": arch,
            "input_shape": list(INPUT_SHAPE),
            "num_classes": 10,
            "dataset": dataset,
            "budget": {"latency_ms": latency_ms},
            "objective": "constrained",
            "search": {"compute_epochs": args.compute_epochs, "seed": args.seed},
            "finetune": {"lr": args.lr, "batch_size": 64, "final_epochs": args.compute_epochs},
            "pruning": {"round_to": 8},
            "latency": {**LATENCY, "predictor": args.predictor},
        }
    )


def uniform_at_measured_latency(problem: PruningProblem, limit_ms: float) -> tuple[Plan, float]:
    """Return the widest uniform plan whose end-to-end latency meets ``limit_ms``."""

    def plan_at(keep: float) -> Plan:
        return Plan(
            {
                g.name: min(
                    g.channels, max(g.min_channels, math.floor(g.channels * keep / g.step) * g.step)
                )
                for g in problem.space.groups
            }
        )

    def measured(plan: Plan) -> float:
        return problem.measure_latency(build_candidate(problem, plan)).median_ms

    low, high, best = 0.0, 1.0, (plan_at(0.0), measured(plan_at(0.0)))
    for _ in range(9):
        mid = (low + high) / 2
        plan = plan_at(mid)
        ms = measured(plan)
        if ms <= limit_ms:
            low, best = mid, (plan, ms)
        else:
            high = mid
    return best


def run_model(arch: str, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) the baseline, search at the latency budget, compare with uniform."""
    weights, trained = ensure_baseline(
        args.seed,
        args.base_epochs,
        Path(args.cache),
        arch=arch,
        dataset=dataset,
        input_shape=INPUT_SHAPE,
    )
    probe = load_problem(_spec(arch, dataset, args, 1e6), weights=weights, device="cpu")
    unpruned = probe.measure_latency(probe.model).median_ms
    limit = args.budget * unpruned
    started = time.perf_counter()
    problem = load_problem(_spec(arch, dataset, args, limit), weights=weights, device="cpu")
    load_s = time.perf_counter() - started
    interference = Interference()
    searching = time.perf_counter()
    study = open_study(
        problem, optuna.storages.InMemoryStorage(), sensitivity=lambda: job_sensitivity(problem)
    )
    checkpoints = MemoryCheckpoints()
    run_search(problem, study, trials=planned_trials(problem.spec), checkpoints=checkpoints)
    trials = study.get_trials(deepcopy=False)
    conclusion = conclude_search(  # the product's lifecycle: confirmation included
        problem, trials, storage="memory", study_name=arch, checkpoints=checkpoints
    )
    searched = conclusion.final
    if searched is None:
        raise RuntimeError(f"{arch}: the search delivered nothing: {conclusion.message}")
    search_s = time.perf_counter() - searching
    uniform_plan, uniform_ms = uniform_at_measured_latency(problem, limit)
    uniform = finalize(problem, uniform_plan, -1)
    base_macs = problem.baseline.cost.macs

    def row(final: Any) -> dict[str, Any]:
        m = final.measured
        return {
            "test_accuracy": m.test_accuracy,
            "val_accuracy": m.val_accuracy,
            "latency_ms": m.latency.median_ms,
            "latency_p10_ms": m.latency.p10_ms,
            "latency_p90_ms": m.latency.p90_ms,
            "meets_budget": m.latency.median_ms <= limit,
            "macs_ratio": m.cost.macs / base_macs,
            "final_epochs": final.final_epochs,
        }

    return {
        "model": arch,
        "baseline_test_accuracy": trained.get("test_accuracy"),
        "unpruned_latency_ms": unpruned,
        "budget_ms": limit,
        "predictor": args.predictor,
        "table_build_s": round(load_s, 1),
        "search": row(searched)
        | {
            "compute_epochs": conclusion.report.get("compute", {}).get("epochs"),
            "trial": searched.trial,
            "table_trials": sum(t.user_attrs.get("latency_source") == "table" for t in trials),
            "latency_check": conclusion.report.get("latency_check"),
            "warnings": list(conclusion.warnings),
        },
        "uniform": row(uniform)
        | {"bisection_latency_ms": uniform_ms, "compute_epochs": uniform.final_epochs},
        "search_s": round(search_s, 1),
        "interference_cores": interference.cores(),
    }


def markdown(payload: dict[str, Any]) -> str:
    """Return the results as a markdown table."""
    lines = [
        "# Latency-budget searches",
        "",
        f"Machine: {payload['machine']['cpu']} ({payload['machine']['cores']} cores); "
        f"onnxruntime, 1 thread, batch 1, median of {LATENCY['repeats']} runs after "
        f"{LATENCY['warmup']} warm-up. Budget: {payload['budget']:.0%} of the unpruned "
        f"median latency. Fashion-MNIST ({payload['train_subset']} training images, "
        f"{payload['test_subset']} test images, padded to 32x32); compute "
        f"{payload['compute_epochs']:g} epochs for each method; seed {payload['seed']}.",
        "",
        "| model | unpruned ms | budget ms | method | measured ms (p10–p90) | meets | MACs "
        "| test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        for method in ("search", "uniform"):
            m = r[method]
            lines.append(
                f"| {r['model']} | {r['unpruned_latency_ms']:.3f} | {r['budget_ms']:.3f} | "
                f"{method}{' (' + r['predictor'] + ')' if method == 'search' else ''} | "
                f"{m['latency_ms']:.3f} ({m['latency_p10_ms']:.3f}–{m['latency_p90_ms']:.3f}) | "
                f"{'yes' if m['meets_budget'] else 'NO'} | {m['macs_ratio']:.1%} | "
                f"{m['test_accuracy']:.2%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``latency_budget.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "efficientnet_b0"])
    parser.add_argument("--budget", type=float, default=0.4, help="fraction of unpruned latency")
    parser.add_argument("--compute-epochs", type=float, default=6.0)
    parser.add_argument("--base-epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictor", choices=("table", "measure"), default="table")
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--test-subset", type=int, default=2000)
    parser.add_argument("--data-root", default="/usr/share/datasets")
    parser.add_argument("--cache", default="/tmp/inferprune-bench")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dataset = padded_subset(args.data_root, args.train_subset, args.test_subset, Path(args.cache))
    rows = []
    for arch in args.models:
        rows.append(run_model(arch, dataset, args))
        logger.info("%s", json.dumps(rows[-1], indent=1))
    payload = {
        "machine": machine(),
        "budget": args.budget,
        "compute_epochs": args.compute_epochs,
        "seed": args.seed,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latency_budget.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "latency_budget.md").write_text(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
