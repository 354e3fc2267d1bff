"""``inferprune train``: a baseline to prune, trained on a local or bundled data set."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from service.cli._arguments import (
    add_data_arguments,
    add_device_argument,
    add_json_argument,
    add_model_arguments,
    input_shape,
    positive_float,
    positive_int,
)
from service.cli._console import console, human_count, print_json, progress_bar


def register(commands: Any) -> None:
    """Add the ``train`` command."""
    train = commands.add_parser(
        "train",
        help="train a baseline model to prune",
        description="Train an architecture from scratch (or from --weights) on a data set "
        "and save it as a safetensors checkpoint that remembers its architecture, "
        "classes, input shape and input normalization. Reports validation and test "
        "accuracy.",
    )
    add_model_arguments(train, arch_required=True)
    add_data_arguments(train, required=True)
    train.add_argument("--weights", metavar="F", help="start from these weights")
    train.add_argument(
        "--epochs",
        type=positive_float,
        default=10.0,
        metavar="E",
        help="passes over the training split (default: 10)",
    )
    train.add_argument(
        "--lr",
        type=positive_float,
        default=0.05,
        metavar="LR",
        help="initial learning rate, cosine-decayed (default: 0.05)",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="B",
        help="samples per step (default: 64)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seeds the split, the initialization and the shuffling (default: 0)",
    )
    train.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to write the checkpoint (.safetensors)",
    )
    add_device_argument(train, what="training and evaluation run")
    add_json_argument(train)
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train, evaluate, save."""
    import torch

    from models.cost import measure_cost
    from models.data import load_dataset
    from models.device import describe_device, resolve_device
    from models.io import CheckpointInfo, load_model, save_pruned
    from models.prune import Plan
    from models.train import evaluate, fine_tune
    from models.zoo import get_architecture

    device = resolve_device(args.device)
    shape = input_shape(args) or get_architecture(args.arch).default_input_shape
    data = load_dataset(
        args.dataset,
        input_shape=shape,
        num_classes=args.num_classes,
        root=args.data_root,
        seed=args.seed,
    )
    classes = args.num_classes or data.num_classes
    torch.manual_seed(args.seed)
    model, _ = load_model(args.arch, args.weights, num_classes=classes, input_shape=shape)
    model.to(device)
    started = time.perf_counter()
    title = f"training {args.arch} on {data.name} ({describe_device(device)})"
    with progress_bar(title, None, enabled=not args.json) as bar:

        def on_step(p: Any) -> None:
            bar.update(
                0,
                total=p.total_steps,
                completed=p.step,
                status=f"loss {p.loss:.3f}  epoch {p.epoch:.1f}",
            )

        fine_tune(
            model,
            data.train,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            on_step=on_step,
        )
    seconds = time.perf_counter() - started
    val = evaluate(model, data.val)
    test = evaluate(model, data.test)
    model.cpu()
    norm = data.normalization
    info = CheckpointInfo(
        args.arch,
        classes,
        shape,
        Plan(),
        normalization={"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
        extra={
            "dataset": data.name,
            "val_accuracy": f"{val.top1:.6f}",
            "test_accuracy": f"{test.top1:.6f}",
        },
    )
    path = save_pruned(model, args.output, info)
    cost = measure_cost(model, shape)
    result = {
        "arch": args.arch,
        "dataset": data.name,
        "device": describe_device(device),
        "num_classes": classes,
        "input_shape": list(shape),
        "epochs": args.epochs,
        "seconds": round(seconds, 2),
        "val_accuracy": val.top1,
        "test_accuracy": test.top1,
        "macs": cost.macs,
        "params": cost.params,
        "output": str(path),
    }
    if args.json:
        print_json(result)
        return 0
    table = Table(title=f"trained {args.arch} on {data.name} in {seconds:.0f} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("val accuracy", f"{val.top1:.2%}")
    table.add_row("test accuracy", f"{test.top1:.2%}")
    table.add_row("MACs", human_count(cost.macs))
    table.add_row("parameters", human_count(cost.params))
    console.print(table)
    console.print(f"saved [bold]{path}[/]")
    return 0
