"""``inferprune prune``: the whole search on this machine, with live progress.

This module holds the command's flags (a contract: see DESIGN.md); the flags become a
job spec in :mod:`service.cli._prune_spec`, and :mod:`service.cli._prune_run` runs
the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.cli._arguments import (
    add_criterion_argument,
    add_data_arguments,
    add_depth_argument,
    add_device_argument,
    add_distill_argument,
    add_json_argument,
    add_model_arguments,
    add_schedule_arguments,
    add_sequence_argument,
    fraction,
    positive_float,
    positive_int,
)
from service.cli._device_meter import add_target_arguments
from service.cli._prune_run import run_prune


def register(commands: Any) -> None:
    """Add the ``prune`` command."""
    prune = commands.add_parser(
        "prune",
        help="search per-layer filter counts for a budget and write the pruned model",
        description="Bayesian optimization (Optuna) over how many filters each group keeps. "
        "Every candidate is pruned for real, BatchNorm-recalibrated, briefly fine-tuned "
        "and measured (MACs, parameters, latency on this machine). The best plan within "
        "the budget is fine-tuned longer and evaluated on a test split the search never "
        "saw. Writes report.json, model.safetensors, model.onnx and pareto.png to --out. "
        "Interrupt with Ctrl-C and run the same command again to resume.",
    )
    add_model_arguments(prune, arch_required=False)
    prune.add_argument(
        "--weights",
        metavar="F",
        help="the trained model (a checkpoint from `train` also sets --arch); "
        "without it the model starts from random weights",
    )
    prune.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="prune your own ONNX model (graph and weights in one file) instead of --arch "
        "and --weights; its input shape and classes come from the file, and "
        "OUT/model.onnx is the pruned model",
    )
    add_data_arguments(prune, required=True)
    budget = prune.add_argument_group("budget (at least one for the constrained objective)")
    budget.add_argument(
        "--flops",
        type=fraction,
        metavar="R",
        help="keep at most the fraction R of the original MACs (0.5 = half)",
    )
    budget.add_argument("--macs", type=positive_int, metavar="N", help="absolute MACs limit")
    budget.add_argument(
        "--params",
        type=positive_float,
        metavar="X",
        help="parameter limit: a fraction if <= 1, else a count",
    )
    budget.add_argument(
        "--latency-ms",
        type=positive_float,
        metavar="L",
        help="median latency limit on this machine, in milliseconds",
    )
    budget.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="X",
        help="allowed drop of validation accuracy (0.01 = one point); alone, "
        "asks for the smallest model within it",
    )
    search = prune.add_argument_group("search")
    search.add_argument(
        "--trials",
        type=positive_int,
        metavar="N",
        help="candidates to evaluate (a resumed study counts earlier ones); required "
        "without --compute-epochs, which otherwise decides it",
    )
    search.add_argument(
        "--compute-epochs",
        type=positive_float,
        metavar="E",
        help="total training the job may spend, search and final fine-tune together, in "
        "epochs of the training split: candidates train in rungs of growing length, the "
        "best third going on from their own weights, and the last survivor is trained on "
        "into the delivered model (--epochs-per-trial, --steps-per-trial and "
        "--final-epochs are then not used)",
    )
    search.add_argument(
        "--objective",
        choices=("constrained", "pareto", "scalar"),
        default="constrained",
        help="constrained (default): best accuracy within the budget; "
        "pareto: the accuracy/MACs trade-off; scalar: accuracy with a soft "
        "penalty (acc * (cost/target)^-0.07)",
    )
    search.add_argument(
        "--sampler",
        choices=("tpe", "gp", "nsga2", "random", "qmc"),
        default="tpe",
        help="default: tpe",
    )
    search.add_argument("--seed", type=int, default=0, metavar="S", help="default: 0")
    search.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="start no new trial after this long",
    )
    search.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: sqlite:///OUT/study.db); watch the search live "
        "with `optuna-dashboard URL` (pip install 'inferprune[dashboard]')",
    )
    search.add_argument(
        "--study-name", metavar="NAME", help="default: derived from the spec, so a rerun resumes"
    )
    train = prune.add_argument_group("training")
    train.add_argument(
        "--epochs-per-trial",
        type=float,
        default=1.0,
        metavar="E",
        help="fine-tuning epochs per candidate (default: 1; 0 = BN recalibration only)",
    )
    train.add_argument(
        "--steps-per-trial",
        type=positive_int,
        metavar="N",
        help="fine-tune each candidate N steps instead",
    )
    train.add_argument(
        "--final-epochs",
        type=float,
        default=3.0,
        metavar="E",
        help="fine-tuning epochs of the chosen plan (default: 3)",
    )
    train.add_argument(
        "--lr",
        type=positive_float,
        default=0.01,
        metavar="LR",
        help="learning rate (default: 0.01)",
    )
    train.add_argument(
        "--batch-size", type=positive_int, default=64, metavar="B", help="default: 64"
    )
    add_distill_argument(train)
    pruning = prune.add_argument_group("pruning and latency")
    add_criterion_argument(pruning)
    add_schedule_arguments(pruning)
    add_sequence_argument(pruning, search=True)
    add_depth_argument(pruning)
    pruning.add_argument(
        "--round-to",
        type=positive_int,
        default=8,
        metavar="R",
        help="channel multiple (default: 8)",
    )
    pruning.add_argument(
        "--latency-backend",
        choices=("onnxruntime", "torch"),
        help="runtime latency is measured with (default: onnxruntime)",
    )
    pruning.add_argument(
        "--latency-threads",
        type=positive_int,
        metavar="T",
        help="threads for latency measurement (default: 1)",
    )
    pruning.add_argument(
        "--latency-predictor",
        choices=("measure", "table"),
        help="measure every candidate end to end (default), or predict it from a layer "
        "latency table of the device and measure only the front and the delivered model",
    )
    add_target_arguments(prune)
    prune.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_device_argument(prune, what="candidates are recalibrated, trained and evaluated")
    add_json_argument(prune)
    prune.set_defaults(handler=run_prune)
