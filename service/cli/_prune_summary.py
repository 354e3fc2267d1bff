"""What ``inferprune prune`` prints at the end: the delivered model beside the unpruned
one (search-time and final accuracies labelled as such), the front, the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from service.cli._console import console, human_bytes, human_count

__all__ = ["percent", "print_summary"]


def print_summary(report: dict[str, Any], written: dict[str, Path]) -> None:
    """Print the delivered model beside the unpruned one, and the files written."""
    base, best = report["baseline"], report["best"]
    table = Table(title=f"{report['arch']} on {report['dataset']}: trial {best['trial']} chosen")
    table.add_column("")
    table.add_column("unpruned", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("pruned / unpruned", justify="right")

    def row(name: str, key: str, fmt: Any, ratio: bool = True) -> None:
        a, b = base.get(key), best.get(key)
        if a is None or b is None:
            return
        table.add_row(name, fmt(a), fmt(b), f"{b / a:.1%}" if ratio and a else "")

    def sparse_row(name: str, key: str, dense: str) -> None:  # a hybrid sequence's kernels
        if key in best and base.get(dense):
            value = best[key]
            table.add_row(
                name, human_count(base[dense]), human_count(value), f"{value / base[dense]:.1%}"
            )

    row("MACs", "macs", human_count)
    sparse_row("effective MACs", "effective_macs", "macs")
    row("parameters", "params", human_count)
    sparse_row("non-zero parameters", "nonzero_params", "params")
    row("size", "size_bytes", human_bytes)
    row("latency (median)", "latency_ms", lambda v: f"{v:.3f} ms")
    if best.get("search_val_accuracy") is not None:
        table.add_row(
            "val accuracy (search-time)",
            "",
            f"{best['search_val_accuracy']:.2%}",
            "",
        )
    row("val accuracy (final)", "val_accuracy", percent, ratio=False)
    row("test accuracy (final)", "test_accuracy", percent, ratio=False)
    console.print(table)
    console.print(
        "search-time: after the trial's short fine-tune; final: after the final fine-tune "
        "(the test split is used only then)"
    )
    console.print(
        f"Pareto front: {len(report['pareto'])} trials, hypervolume "
        f"{report['hypervolume']:.3f}; study {report['study']['name']} in "
        f"{report['study']['storage']}"
    )
    for name, path in written.items():
        console.print(f"  {name:<18} {path}")


def percent(value: float) -> str:
    """Return an accuracy (a fraction) as the CLI shows it."""
    return f"{value:.2%}"
