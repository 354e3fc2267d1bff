"""What ``inferprune prune`` prints at the end: the delivered model beside the unpruned
one (search-time and final accuracies labelled as such), the front, the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.cli._console import console
from service.cli._job_view import comparison_table

__all__ = ["print_summary"]


def print_summary(report: dict[str, Any], written: dict[str, Path]) -> None:
    """Print the delivered model beside the unpruned one (the table ``inferprune demo``
    shows too), the front, and the files written."""
    base, best = report["baseline"], report["best"]
    title = f"{report['arch']} on {report['dataset']}: trial {best['trial']} chosen"
    table = comparison_table(base, best, title)
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
