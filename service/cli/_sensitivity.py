"""``inferprune sensitivity``: how much accuracy each group costs when narrowed alone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from service.cli._arguments import (
    add_criterion_argument,
    add_data_arguments,
    add_json_argument,
    add_model_arguments,
    fraction,
    input_shape,
    positive_int,
)
from service.cli._console import console, macs_text, print_json, progress_bar


def register(commands: Any) -> None:
    """Add the ``sensitivity`` command."""
    parser = commands.add_parser(
        "sensitivity",
        help="scan how much accuracy each group loses when narrowed alone",
        description="Narrow one group at a time to about 75 %, 50 % and 25 % of its "
        "channels, re-estimate BatchNorm statistics as a search trial does, and measure "
        "validation accuracy: forward passes only, nothing is trained. Prints a table "
        "(accuracy at each scanned width and the drop); with --flops also the plan that "
        "spends the budget where it costs the least accuracy, beside the uniform plan.",
    )
    add_model_arguments(parser, arch_required=False)
    parser.add_argument(
        "--weights",
        required=True,
        metavar="F",
        help="the trained model (a checkpoint from `train` also sets --arch)",
    )
    add_data_arguments(parser, required=True)
    add_criterion_argument(parser)
    parser.add_argument(
        "--round-to",
        type=positive_int,
        default=8,
        metavar="R",
        help="channel multiple (default: 8)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="default: 0")
    parser.add_argument(
        "--flops",
        type=fraction,
        metavar="R",
        help="also allocate a budget of the fraction R of the original MACs by sensitivity "
        "and show that plan beside the uniform one",
    )
    parser.add_argument(
        "--png", type=Path, metavar="FILE", help="also plot accuracy against kept fraction"
    )
    add_json_argument(parser)
    parser.set_defaults(handler=run_sensitivity)


def _spec(args: argparse.Namespace, arch: str) -> Any:
    from service.cli._flags import spec_from

    data: dict[str, Any] = {
        "arch": arch,
        "num_classes": args.num_classes,
        "input_shape": input_shape(args),
        "dataset": args.dataset,
        # the scan needs no budget; a pareto job is the one that may go without
        "objective": "constrained" if args.flops else "pareto",
        "budget": {"flops": args.flops},
        "search": {"trials": 1, "seed": args.seed},
        "pruning": {"criterion": args.criterion, "round_to": args.round_to},
    }
    return spec_from(data, args)


def run_sensitivity(args: argparse.Namespace) -> int:
    """Scan the model, print the table (and the plans at ``--flops``), plot if asked."""
    from search import allocate_by_sensitivity, load_problem, plot_sensitivity, scan_sensitivity
    from service.cli._flags import arch_from

    spec = _spec(args, arch_from(args))
    with console.status("loading the model and data, measuring the baseline...", spinner="dots"):
        problem = load_problem(spec, weights=args.weights, data_root=args.data_root)
    with progress_bar("scanning", None, enabled=not args.json) as bar:

        def on_point(done: int, count: int, group: str) -> None:
            bar.update(0, total=count, completed=done, status=group)

        sensitivity = scan_sensitivity(problem, on_point=on_point)
    plan = uniform = None
    if args.flops:
        plan = allocate_by_sensitivity(sensitivity, problem.space)
        uniform = problem.space.uniform_at_budget()
    if args.png:
        plot_sensitivity(sensitivity, args.png, title=f"{problem.info.arch} on {problem.data.name}")
    if args.json:
        print_json(
            {
                "sensitivity": sensitivity.to_dict(),
                "plan": plan.to_dict() if plan is not None else None,
                "uniform": uniform.to_dict() if uniform is not None else None,
            }
        )
        return 0
    _print_scan(sensitivity)
    if plan is not None and uniform is not None:
        _print_plans(problem, plan, uniform)
    if args.png:
        console.print(f"plot: {args.png}")
    return 0


def _print_scan(sensitivity: Any) -> None:
    fractions = sensitivity.fractions
    table = Table(
        title=f"validation accuracy with one group narrowed (criterion {sensitivity.criterion}, "
        f"{sensitivity.seconds:.0f} s)",
        caption=f"unpruned: {sensitivity.baseline_accuracy:.1%} as trained, "
        f"{sensitivity.reference_accuracy:.1%} after the same BN recalibration; "
        "max drop: the most accuracy lost from the latter, in points",
    )
    table.add_column("group", no_wrap=True, min_width=max(len(g.name) for g in sensitivity.groups))
    table.add_column("channels", justify="right")
    for f in fractions:
        table.add_column(f"keep ~{f:.0%}", justify="right")
    table.add_column("max drop", justify="right", no_wrap=True)
    for group in sensitivity.groups:
        # each point under the fraction nearest the share it keeps (8 of 16 under ~50%)
        columns: list[list[str]] = [[] for _ in fractions]
        for p in group.points:
            share = p.width / group.channels
            nearest = min(range(len(fractions)), key=lambda i: abs(fractions[i] - share))
            columns[nearest].append(f"{p.width}: {p.val_accuracy:.1%}")
        cells = [" ".join(column) or "—" for column in columns]
        drop = max(sensitivity.reference_accuracy - p.val_accuracy for p in group.points)
        table.add_row(group.name, str(group.channels), *cells, f"{100 * drop:.1f} pt")
    console.print(table)


def _print_plans(problem: Any, plan: Any, uniform: Any) -> None:
    baseline = problem.baseline.cost.macs
    table = Table(title="plans at the budget (channels kept per group)")
    table.add_column("group")
    table.add_column("channels", justify="right")
    table.add_column("uniform", justify="right")
    table.add_column("by sensitivity", justify="right")
    for g in problem.space.groups:
        table.add_row(g.name, str(g.channels), str(uniform[g.name]), str(plan[g.name]))
    table.add_row(
        "MACs",
        "",
        macs_text(problem.space.predict(uniform).macs, baseline),
        macs_text(problem.space.predict(plan).macs, baseline),
    )
    console.print(table)
