"""``inferprune groups`` and ``inferprune profile``: what can be pruned, what it costs."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from service.cli._arguments import (
    add_json_argument,
    add_model_arguments,
    input_shape,
    positive_int,
)
from service.cli._console import console, human_bytes, human_count, print_json


def register(commands: Any) -> None:
    """Add the ``groups`` and ``profile`` commands."""
    groups = commands.add_parser(
        "groups",
        help="list a model's prunable channel groups",
        description="Trace an architecture with Torch-Pruning and list the groups of "
        "channels that must be pruned together (a residual stream is one group), named "
        "by the first layer that produces them. Plans for `apply` and `prune` use these "
        "names.",
    )
    add_model_arguments(groups, arch_required=False)
    groups.add_argument(
        "--round-to",
        type=positive_int,
        default=8,
        metavar="R",
        help="channel counts are multiples of R unless a layer is narrower (default: 8)",
    )
    groups.add_argument(
        "--list", action="store_true", help="list the architectures in the zoo instead"
    )
    add_json_argument(groups)
    groups.set_defaults(handler=run_groups)

    profile = commands.add_parser(
        "profile",
        help="measure MACs, parameters, size and latency of a model",
        description="Measure a model: MACs (fvcore, one per multiply-add, batch 1), "
        "parameters, size in bytes, and latency on this machine (warm-up, fixed threads, "
        "median and p10/p90 of repeated runs).",
    )
    add_model_arguments(profile, arch_required=False)
    source = profile.add_mutually_exclusive_group()
    source.add_argument(
        "--weights", metavar="F", help="weights (safetensors or a torch state_dict) for --arch"
    )
    source.add_argument(
        "--pruned", metavar="F", help="a checkpoint written by `apply`, `prune` or the service"
    )
    profile.add_argument(
        "--backend",
        choices=("onnxruntime", "torch"),
        default="onnxruntime",
        help="runtime to time (default: onnxruntime)",
    )
    profile.add_argument(
        "--threads", type=positive_int, default=1, metavar="T", help="intra-op threads (default: 1)"
    )
    profile.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="B",
        help="inputs per forward pass (default: 1)",
    )
    profile.add_argument(
        "--warmup", type=int, default=10, metavar="N", help="untimed runs first (default: 10)"
    )
    profile.add_argument(
        "--repeats", type=positive_int, default=50, metavar="N", help="timed runs (default: 50)"
    )
    add_json_argument(profile)
    profile.set_defaults(handler=run_profile)


def run_groups(args: argparse.Namespace) -> int:
    """List groups (or architectures)."""
    if args.list:
        return _list_architectures(args)
    if not args.arch:
        raise SystemExit("inferprune groups: error: --arch is required (or --list)")
    from models.cost import AnalyticCost
    from models.prune import build_pruning_graph
    from models.zoo import build_model, get_architecture

    shape = input_shape(args) or get_architecture(args.arch).default_input_shape
    model = build_model(args.arch, args.num_classes, shape)
    graph = build_pruning_graph(model, shape, round_to=args.round_to)
    baseline = AnalyticCost(model, graph).baseline
    if args.json:
        print_json(
            {
                "arch": args.arch,
                "input_shape": list(shape),
                "macs": baseline.macs,
                "params": baseline.params,
                "groups": [
                    {
                        "name": g.name,
                        "channels": g.channels,
                        "min_channels": g.min_channels,
                        "step": g.step,
                        "layers": list(g.layers),
                    }
                    for g in graph.groups
                ],
                "removable_blocks": list(graph.blocks),
            }
        )
        return 0
    table = Table(
        title=f"{args.arch}: {len(graph.groups)} prunable groups "
        f"({human_count(baseline.macs)} MACs, {human_count(baseline.params)} params)"
    )
    table.add_column("group")
    table.add_column("channels", justify="right")
    table.add_column("may keep", justify="right")
    table.add_column("layers")
    for g in graph.groups:
        widths = g.allowed_widths()
        keep = (
            ", ".join(map(str, widths))
            if len(widths) <= 4
            else (f"{widths[0]}..{widths[-1]} step {g.step}")
        )
        shown = ", ".join(g.layers[:4]) + (f" +{len(g.layers) - 4}" if len(g.layers) > 4 else "")
        table.add_row(g.name, str(g.channels), keep, shown)
    console.print(table)
    if graph.blocks:
        console.print(
            f"{len(graph.blocks)} residual blocks can be removed whole (width 0 in a plan): "
            + ", ".join(graph.blocks)
        )
    return 0


def _list_architectures(args: argparse.Namespace) -> int:
    from models.zoo import list_architectures

    archs = list_architectures()
    if args.json:
        print_json(
            {
                "architectures": [
                    {
                        "name": a.name,
                        "family": a.family,
                        "input_shape": list(a.default_input_shape),
                        "num_classes": a.default_num_classes,
                    }
                    for a in archs
                ]
            }
        )
        return 0
    table = Table(title="architectures")
    table.add_column("name")
    table.add_column("family")
    table.add_column("default input", justify="right")
    for a in archs:
        table.add_row(a.name, a.family, "x".join(map(str, a.default_input_shape)))
    console.print(table)
    return 0


def run_profile(args: argparse.Namespace) -> int:
    """Measure one model."""
    from models.cost import measure_cost, measure_latency
    from models.io import load_model

    model, info = load_model(
        args.arch,
        args.pruned or args.weights,
        num_classes=args.num_classes,
        input_shape=input_shape(args),
    )
    cost = measure_cost(model, info.input_shape)
    with console.status(f"timing {info.arch} with {args.backend}...", spinner="dots"):
        latency = measure_latency(
            model,
            info.input_shape,
            backend=args.backend,
            threads=args.threads,
            batch_size=args.batch_size,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    if args.json:
        print_json(
            {
                "arch": info.arch,
                "macs": cost.macs,
                "params": cost.params,
                "size_bytes": cost.size_bytes,
                "latency_ms": {
                    "median": latency.median_ms,
                    "p10": latency.p10_ms,
                    "p90": latency.p90_ms,
                },
                "backend": latency.backend,
                "threads": latency.threads,
                "batch_size": latency.batch_size,
                "latency_device": "local",  # profile always measures on this machine
            }
        )
        return 0
    table = Table(title=f"{info.arch} {'(pruned)' if len(info.plan) else ''}".strip())
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("MACs (batch 1)", human_count(cost.macs))
    table.add_row("parameters", human_count(cost.params))
    table.add_row("size", human_bytes(cost.size_bytes))
    table.add_row(
        f"latency here ({latency.backend}, {latency.threads} thread(s), "
        f"batch {latency.batch_size})",
        f"{latency.median_ms:.3f} ms (p10 {latency.p10_ms:.3f}, p90 {latency.p90_ms:.3f})",
    )
    console.print(table)
    return 0
