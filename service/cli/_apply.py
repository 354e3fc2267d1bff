"""``inferprune apply`` and ``inferprune export``: one pruning, and deployable files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from service.cli._arguments import (
    add_criterion_argument,
    add_data_arguments,
    add_device_argument,
    add_json_argument,
    add_model_arguments,
    add_schedule_arguments,
    add_sequence_argument,
    input_shape,
    positive_float,
    positive_int,
)
from service.cli._console import console, human_bytes, human_count, print_json


def register(commands: Any) -> None:
    """Add the ``apply`` and ``export`` commands."""
    apply = commands.add_parser(
        "apply",
        help="prune a model with a given plan or a uniform ratio",
        description="Physically prune a model: every group keeps the channels the plan "
        "says (--plan, a JSON object {group: channels}, e.g. a report's best plan) or "
        "loses the fraction R of its channels (--ratio R, Torch-Pruning's uniform "
        "pruning_ratio). The lowest-scoring channels under --criterion go. With "
        "--dataset, data criteria get calibration batches and --finetune-epochs "
        "recovers accuracy, reached at once or along --schedule. --sequence FILE prunes "
        "by a hybrid sequence of channel, kernel and weight steps (alone: every step; "
        "beside --plan or --ratio, which stand for its channel steps: its kernel and "
        "weight steps). Weight steps (LSTM/GRU weights by magnitude) reach their "
        "sparsity along AGP over the first half of --finetune-epochs, at once without it.",
    )
    add_model_arguments(apply, arch_required=False)
    apply.add_argument(
        "--weights",
        metavar="F",
        help="weights to prune (a checkpoint from `train` also sets --arch)",
    )
    how = apply.add_mutually_exclusive_group()
    how.add_argument(
        "--plan",
        type=Path,
        metavar="PLAN.json",
        help="channels to keep per group, and 0 for each residual block to remove whole "
        '(e.g. {"layer1.2": 0, "layer2.0.conv1": 16}; `inferprune groups` lists both)',
    )
    how.add_argument(
        "--ratio",
        type=float,
        metavar="R",
        help="remove the fraction R of every group's channels, 0 <= R < 1",
    )
    add_sequence_argument(apply, search=False)
    add_criterion_argument(apply)
    add_data_arguments(apply, required=False)
    apply.add_argument(
        "--finetune-epochs",
        type=positive_float,
        metavar="E",
        help="fine-tune the pruned model for E epochs (needs --dataset)",
    )
    add_schedule_arguments(apply)
    apply.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="X",
        help="--schedule adaptive: the validation accuracy the pruning may lose, a fraction (0.01)",
    )
    apply.add_argument(
        "--lr",
        type=positive_float,
        default=0.01,
        metavar="LR",
        help="fine-tuning learning rate (default: 0.01)",
    )
    apply.add_argument(
        "--round-to",
        type=positive_int,
        default=8,
        metavar="R",
        help="channel multiple for --ratio (default: 8)",
    )
    apply.add_argument("--seed", type=int, default=0, metavar="S", help="default: 0")
    apply.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to write the pruned checkpoint (.safetensors)",
    )
    add_device_argument(apply, what="recalibration, fine-tuning and validation run")
    add_json_argument(apply)
    apply.set_defaults(handler=run_apply)

    export = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX, torch.export (.pt2) or TorchScript",
        description="Write a checkpoint in a format that runs without inferprune: ONNX "
        "(dynamic batch), torch.export .pt2 or TorchScript. Every export is loaded back "
        "and its outputs compared with torch's.",
    )
    export.add_argument(
        "checkpoint",
        type=Path,
        metavar="PRUNED.safetensors",
        help="a checkpoint written by `train`, `apply`, `prune` or the service",
    )
    export.add_argument(
        "--format", required=True, choices=("onnx", "pt2", "torchscript"), help="output format"
    )
    export.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT", help="file to write"
    )
    add_json_argument(export)
    export.set_defaults(handler=run_export)


def run_apply(args: argparse.Namespace) -> int:
    """Prune once (the library's :func:`search.apply_once`), save, show the change."""
    from models.io import save_pruned
    from models.prune import Plan
    from models.schedules import ScheduleConfig
    from search import apply_once
    from search.errors import SpecError
    from search.steps import read_sequence, to_pruning_steps

    if args.plan is None and args.ratio is None and args.sequence is None:
        raise SpecError("give --plan, --ratio or --sequence")
    sequence = None if args.sequence is None else to_pruning_steps(read_sequence(args.sequence))
    if args.finetune_epochs and not args.dataset:
        raise SpecError("--finetune-epochs needs --dataset to train on")
    if args.schedule != "one_shot" and not args.finetune_epochs:
        raise SpecError(
            f"--schedule {args.schedule} prunes over the fine-tune: give --finetune-epochs "
            "(and --dataset)"
        )
    schedule = ScheduleConfig(
        args.schedule, args.schedule_steps, args.criteria or (), args.max_accuracy_drop
    )
    plan = None
    if args.plan is not None:
        try:
            plan = Plan.from_json(args.plan.read_text())
        except OSError as exc:
            raise SpecError(f"cannot read --plan {args.plan}: {exc.strerror}") from None
    with console.status("pruning...", spinner="dots"):
        result = apply_once(
            arch=args.arch,
            weights=args.weights,
            plan=plan,
            ratio=args.ratio,
            criterion=args.criterion,
            num_classes=args.num_classes,
            input_shape=input_shape(args),
            dataset=args.dataset,
            data_root=args.data_root,
            finetune_epochs=args.finetune_epochs,
            lr=args.lr,
            round_to=args.round_to,
            seed=args.seed,
            device=args.device,
            schedule=schedule,
            sequence=sequence,
        )
    path = save_pruned(result.model, args.output, result.info)
    if args.json:
        print_json({**result.to_dict(), "output": str(path)})
        return 0
    before, after = result.before, result.after
    how = args.criterion if args.schedule == "one_shot" else f"{args.criterion}, {args.schedule}"
    table = Table(title=f"pruned {result.info.arch} ({how})")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("kept", justify="right")
    for name, a, b, fmt in (
        ("MACs", before.macs, after.macs, human_count),
        ("parameters", before.params, after.params, human_count),
        ("size", before.size_bytes, after.size_bytes, human_bytes),
    ):
        table.add_row(name, fmt(a), fmt(b), f"{b / a:.1%}")
    sparse = result.to_dict()["after"]
    if sparse.get("nonzero_params", after.params) < after.params:  # kernel or weight zeros
        for name, a, b in (
            ("non-zero params", before.params, sparse["nonzero_params"]),
            ("effective MACs", before.macs, sparse["effective_macs"]),
        ):
            table.add_row(name, human_count(a), human_count(b), f"{b / a:.1%}")
    if result.val_accuracy is not None:
        table.add_row("val accuracy", "", f"{result.val_accuracy:.2%}", "")
    console.print(table)
    console.print(f"saved [bold]{path}[/]")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export a checkpoint."""
    from models.io import export_model, load_model

    model, info = load_model(weights=args.checkpoint)
    with console.status(f"exporting to {args.format} and checking it...", spinner="dots"):
        export_model(model, info.input_shape, args.format, args.output)
    if args.json:
        print_json(
            {
                "arch": info.arch,
                "format": args.format,
                "output": str(args.output),
                "input_shape": list(info.input_shape),
                "normalization": info.normalization,
            }
        )
        return 0
    console.print(
        f"wrote [bold]{args.output}[/] ({args.format}, input "
        f"{'x'.join(map(str, info.input_shape))}, outputs checked against torch)"
    )
    if info.normalization:
        mean = ", ".join(f"{v:.4f}" for v in info.normalization["mean"])
        std = ", ".join(f"{v:.4f}" for v in info.normalization["std"])
        console.print(f"inputs: pixels scaled to [0, 1], then (x - [{mean}]) / [{std}] per channel")
    return 0
