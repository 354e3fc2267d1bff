"""Which residual blocks can go: each block's cost when removed alone, against the
contribution the search orders removal by.

For a trained baseline of ``search_quality.py`` (its cache, same arguments), every
removable block is removed alone, BatchNorm is recalibrated as a trial does, and the
validation accuracy is measured (no training). Beside it: the block's contribution
(``models.prune.block_contributions`` on the job's calibration batch, exactly what
``load_problem`` gives the search space), their Spearman correlation, and the validation
accuracy, before any training, of the model with half of each stage's blocks removed
three ways: evenly spread (the order before contributions), smallest contribution first
(the search's order now), and smallest measured loss first (the order a full scan would
give).

    python benchmarks/block_sensitivity.py --arch resnet56_cifar --dataset fashion_mnist \
        --input-shape 1,28,28 --train-subset 12000 --test-subset 10000 --base-epochs 15 \
        --round-to 4 --data-root /usr/share/datasets --seed 1

Writes ``benchmarks/results/block_sensitivity.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import Interference, machine  # noqa: E402
from _quality_baselines import add_resnet56_arguments, baseline_of, subset_of  # noqa: E402
from _quality_settings import Settings  # noqa: E402

from models.prune import block_containers, removal_order, spread_removal  # noqa: E402
from models.train import evaluate, recalibrate_batchnorm  # noqa: E402
from search import PruningProblem, load_problem  # noqa: E402
from search.problem import build_candidate  # noqa: E402
from search.sensitivity import SCAN_BN_BATCHES  # noqa: E402

logger = logging.getLogger("benchmarks.block_sensitivity")


def accuracy_without(problem: PruningProblem, blocks: Sequence[str]) -> float:
    """Return the validation accuracy with ``blocks`` removed, BatchNorm recalibrated as
    the sensitivity scan's candidates are (the same seeded batches for every plan)."""
    from models.prune import Plan

    model = problem.place(build_candidate(problem, Plan(dict.fromkeys(blocks, 0))))
    seed = problem.spec.search.seed * 100_003
    recalibrate_batchnorm(model, problem.data.train, batches=SCAN_BN_BATCHES, seed=seed)
    return evaluate(model, problem.data.val).top1


def half_of_each_stage(
    stages: Mapping[str, tuple[str, ...]], order: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """Return half of each stage's blocks: the first of ``order``, or spread evenly."""
    out: list[str] = []
    for stage, blocks in stages.items():
        count = len(blocks) // 2
        out += list(order[stage][:count]) if order else list(spread_removal(blocks, count))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one baseline; return the JSON payload."""
    started, interference = time.perf_counter(), Interference()
    dataset = subset_of(args)
    weights, trained = baseline_of(args, args.seed, dataset)
    settings = Settings(
        trials=1,
        epochs_per_trial=0.0,
        final_epochs=1.0,
        lr=0.01,
        batch_size=64,
        criterion="l1",
        round_to=args.round_to,
        base_epochs=args.base_epochs,
        dataset=dataset,
        input_shape=args.input_shape,
        data_root=args.data_root,
        arch=args.arch,
        compute_epochs=20.0,
    )
    problem = load_problem(settings.spec(0.125, args.seed, "tpe", 15.0), weights=weights)
    contributions = problem.space.contributions
    if contributions is None:
        raise SystemExit("this model has no removable blocks to measure")
    blocks = list(problem.graph.blocks)
    reference = accuracy_without(problem, [])
    alone = {}
    for block in blocks:
        alone[block] = accuracy_without(problem, [block])
        logger.info(
            "%-10s removed: val %.4f, contribution %.3g", block, alone[block], contributions[block]
        )
    stages = block_containers(blocks)
    by_contribution = {s: removal_order(b, contributions) for s, b in stages.items()}
    by_loss = {s: removal_order(b, {x: -alone[x] for x in b}) for s, b in stages.items()}
    halves = {
        "spread": half_of_each_stage(stages, None),
        "contribution": half_of_each_stage(stages, by_contribution),
        "measured_loss": half_of_each_stage(stages, by_loss),
    }
    rho = spearmanr([contributions[b] for b in blocks], [-alone[b] for b in blocks]).statistic
    return {
        "benchmark": "block_sensitivity",
        "machine": machine(),
        "arch": args.arch,
        "dataset": args.dataset,
        "seed": args.seed,
        "baseline": {
            "tensors_sha256": trained.get("tensors_sha256"),
            "test_accuracy": trained.get("test_accuracy"),
        },
        "val_images": len(problem.data.val),
        "calibration_images": int(problem.calibration[0][0].shape[0]),
        "reference_val_accuracy": reference,
        "blocks": [
            {"block": b, "val_accuracy_removed": alone[b], "contribution": contributions[b]}
            for b in blocks
        ],
        "spearman_contribution_vs_loss": float(rho),
        "half_removed": {
            kind: {"blocks": removed, "val_accuracy": accuracy_without(problem, removed)}
            for kind, removed in halves.items()
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "interference_cores": interference.cores(),
    }


def markdown(payload: dict[str, Any]) -> str:
    """Return the markdown report."""
    m = payload["machine"]
    lines = [
        "# Block sensitivity: which residual blocks can go",
        "",
        f"{payload['arch']} on `{payload['dataset']}`, seed {payload['seed']}'s baseline "
        f"(test accuracy {100 * payload['baseline']['test_accuracy']:.2f} %, tensors "
        f"{str(payload['baseline']['tensors_sha256'])[:12]}…). Machine: {m['cpu']}, "
        f"{m['cores']} cores; {payload['wall_s']:.0f} s while other processes took "
        f"{payload['interference_cores']:.2f} cores. Validation accuracy on "
        f"{payload['val_images']} images after BatchNorm recalibration, no training "
        f"(one image is {100 / payload['val_images']:.3f} points); all blocks kept: "
        f"{100 * payload['reference_val_accuracy']:.2f} %. Contribution: "
        "`||block(x) − x|| / ||x||` on the job's calibration batch "
        f"({payload['calibration_images']} training images), as the search space gets it.",
        "",
        f"Spearman (contribution against the accuracy lost): "
        f"**{payload['spearman_contribution_vs_loss']:.2f}**.",
        "",
        "| half of each stage removed | val acc % before training | blocks |",
        "|---|---:|---|",
    ]
    for kind, half in payload["half_removed"].items():
        lines.append(
            f"| {kind.replace('_', ' ')} | {100 * half['val_accuracy']:.2f} | "
            f"{', '.join(half['blocks'])} |"
        )
    lines += [
        "",
        "| block | val acc % without it | contribution |",
        "|---|---:|---:|",
    ]
    for row in payload["blocks"]:
        lines.append(
            f"| {row['block']} | {100 * row['val_accuracy_removed']:.2f} | "
            f"{row['contribution']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the defaults are issue 11's resnet56 configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_resnet56_arguments(parser)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    payload = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "block_sensitivity.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "block_sensitivity.md").write_text(markdown(payload))
    logger.info("wrote %s", args.out_dir / "block_sensitivity.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
