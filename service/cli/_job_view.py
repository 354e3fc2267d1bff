"""How the CLI shows jobs: live progress, job summaries, the Pareto front.

Accuracies come in two kinds and are always labelled: *search-time* (a trial's
validation accuracy after its short fine-tune; every trial and the best so far while a
job searches) and *final* (the chosen model's, after the final fine-tune; a finished
job's ``best``). MACs are shown one way: the count and its share of the unpruned
model's (``20.46M MACs (50%)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from service.cli._console import console, duration, human_bytes, human_count, macs_text

if TYPE_CHECKING:
    from service.client import Client

__all__ = [
    "best_text",
    "budget_text",
    "comparison_table",
    "duration",
    "follow_job",
    "is_final",
    "model_text",
    "print_job",
    "print_pareto",
    "styled",
    "timestamp",
    "watch_line",
]

STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "finalizing": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def follow_job(
    client: Client, job_id: str, *, interval: float = 1.0, quiet: bool = False
) -> dict[str, Any] | None:
    """Follow a job until it finishes and return it (None if the user pressed Ctrl-C).

    In a terminal: a live bar (trials n/N, status, best so far, ETA); in a log: one line
    per change; ``quiet``: nothing.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    try:
        if quiet:
            job = client.wait(job_id, poll_s=interval)
        elif console.is_terminal:
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}"),
            )
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task(f"job {job_id[:8]}", total=None, line="")

                def update_bar(job: dict[str, Any]) -> None:
                    progress = job.get("progress") or {}
                    bar.update(
                        task,
                        total=progress.get("trials_total") or None,
                        completed=progress.get("trials_done", 0),
                        line=watch_line(job),
                    )

                job = client.wait(job_id, poll_s=interval, on_update=update_bar)
        else:  # a log, not a terminal: one line per change
            seen: list[tuple[Any, ...]] = []

            def print_change(job: dict[str, Any]) -> None:
                progress = job.get("progress") or {}
                key = (job.get("status"), progress.get("trials_done"), job.get("detail"))
                if not seen or seen[-1] != key:
                    seen.append(key)
                    done, total = progress.get("trials_done", 0), progress.get("trials_total")
                    console.print(f"trials {done}/{total}  {watch_line(job)}", soft_wrap=True)

            job = client.wait(job_id, poll_s=interval, on_update=print_change)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]stopped watching;[/] job {job_id} keeps running on the server "
            f"(`inferprune status {job_id} --watch` follows it again, "
            f"`inferprune cancel {job_id}` stops it)"
        )
        return None
    return job


def watch_line(job: dict[str, Any]) -> str:
    """Return one line about a job: its status, best model so far (or chosen) and ETA."""
    progress = job.get("progress") or {}
    best = job.get("best")
    which = "chosen" if best and is_final(best) else "best feasible"
    parts = [styled(str(job.get("status"))), f"{which}: {escape(best_text(job, short=True))}"]
    eta = progress.get("eta_s")
    if eta is not None and job.get("status") not in ("succeeded", "failed", "cancelled"):
        parts.append(f"ETA {duration(eta)}")
    if job.get("detail"):
        parts.append(f"[yellow]{escape(str(job['detail']))}[/]")
    return "  ".join(parts)


def print_job(job: dict[str, Any]) -> None:
    spec, progress = job.get("spec") or {}, job.get("progress") or {}
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", str(job.get("id")))
    status = styled(str(job.get("status")))
    if job.get("cancel_requested") and job.get("status") not in ("cancelled", "failed"):
        status += " (cancel requested)"
    table.add_row("status", status)
    table.add_row("model", escape(f"{spec.get('arch', '?')} on {spec.get('dataset', '?')}"))
    budget = {k: v for k, v in (spec.get("budget") or {}).items() if v is not None}
    table.add_row("objective", escape(f"{spec.get('objective', '?')} {budget_text(budget)}"))
    trials = f"{progress.get('trials_done', 0)}/{progress.get('trials_total', '?')}"
    extras = [
        f"{progress[k]} {name}"
        for k, name in (("trials_running", "running"), ("trials_failed", "failed"))
        if progress.get(k)
    ]
    if extras:
        trials += f" ({', '.join(extras)})"
    if progress.get("eta_s") is not None and job.get("status") in ("queued", "running"):
        trials += f", ETA {duration(progress['eta_s'])}"
    table.add_row("trials", trials)
    if job.get("baseline"):
        table.add_row("unpruned", escape(model_text(job["baseline"])))
    table.add_row("best", escape(best_text(job)))
    if job.get("detail"):
        table.add_row("waiting", f"[yellow]{escape(str(job['detail']))}[/]")
    error = job.get("error")
    if error:
        table.add_row(
            "error",
            f"[red]{escape(str(error.get('code')))}[/]: {escape(str(error.get('message')))}",
        )
    for key in ("created_at", "started_at", "finished_at"):
        if job.get(key):
            table.add_row(key.removesuffix("_at"), timestamp(job[key]))
    console.print(table)


def print_pareto(front: dict[str, Any], job_id: str, job: dict[str, Any] | None = None) -> None:
    """Print a job's Pareto front (``ParetoPublic``) as a table, the chosen trial marked.

    Accuracies are search-time ones. With the ``job`` (``JobPublic``), MACs also show
    their share of the unpruned model's, and a finished job's chosen trial its final
    accuracy beside its search-time one.
    """
    points = sorted(front.get("points", []), key=lambda p: (p.get("macs", 0), p.get("trial", 0)))
    best = front.get("best_trial")
    base_macs = ((job or {}).get("baseline") or {}).get("macs")
    chosen_model = (job or {}).get("best") or {}
    final = chosen_model.get("val_accuracy") if is_final(chosen_model) else None
    if not points:
        console.print(f"job {job_id} has no feasible finished trial yet")
    else:
        title = f"Pareto front of job {job_id[:8]}: {len(points)} trials"
        if front.get("hypervolume") is not None:
            title += f", hypervolume {front['hypervolume']:.3f}"
        table = Table(title=title)
        with_latency = any(p.get("latency_ms") is not None for p in points)
        columns = ["trial", "search-time val accuracy"]
        columns += ["final val accuracy"] * (final is not None)
        columns += ["MACs", "params"] + ["latency"] * with_latency
        for name in columns:
            table.add_column(name, justify="right", no_wrap=name == "MACs")
        table.add_column("", no_wrap=True)
        for point in points:
            latency = point.get("latency_ms")
            chosen = point.get("trial") == best
            cells = [
                str(point.get("trial")),
                f"{point['val_accuracy']:.2%}" if point.get("val_accuracy") is not None else "—",
            ]
            if final is not None:
                cells.append(f"{final:.2%}" if chosen else "")
            cells += [
                macs_text(point["macs"], base_macs) if point.get("macs") is not None else "—",
                human_count(point["params"]) if point.get("params") is not None else "—",
            ]
            if with_latency:
                cells.append(f"{latency:.3f} ms" if latency is not None else "—")
            cells.append("[bold green]← chosen[/]" if chosen else "")
            table.add_row(*cells, style="bold" if chosen else None)
        console.print(table)


def is_final(best: dict[str, Any]) -> bool:
    """Return whether a job's ``best`` is the delivered model (accuracies after the final
    fine-tune) rather than the best trial so far (search-time accuracies)."""
    if "finalized" in best:
        return bool(best["finalized"])
    return best.get("test_accuracy") is not None  # older jobs: only a final one has a test


def best_text(job: dict[str, Any], *, short: bool = False) -> str:
    """Return the job's best model in words: every measure, or (short) accuracy and MACs.

    Short: ``trial 7, 87.8% search-time val at 20.46M MACs (50%)`` while the job
    searches, ``trial 7, 99.3% final val at ...`` once it is finished.
    """
    best = job.get("best")
    if not best:
        return "—"
    base_macs = (job.get("baseline") or {}).get("macs")
    if not short:
        kind = "final" if is_final(best) else "search-time"
        text = model_text(best, job.get("baseline"), accuracy_kind=kind)
        return f"{text} (trial {best['trial']})" if best.get("trial") is not None else text
    parts = [f"trial {best['trial']}"] if best.get("trial") is not None else []
    accuracy = best.get("val_accuracy")
    text = f"{accuracy:.1%}" if accuracy is not None else "?"
    text += " final val" if is_final(best) else " search-time val"
    if best.get("macs") is not None:
        text += f" at {macs_text(best['macs'], base_macs)}"
    return ", ".join([*parts, text])


def model_text(
    model: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    *,
    accuracy_kind: str | None = None,
) -> str:
    """Return a model's measures in words.

    Args:
        model: a job's ``baseline`` or ``best``.
        baseline: the unpruned model, for the share of its MACs.
        accuracy_kind: ``final`` or ``search-time`` labels the accuracies (a final one
            also shows the search-time accuracy it had); None (an unpruned baseline's
            accuracies are neither) leaves them unlabelled.
    """
    groups = []  # accuracies of one kind each, then the costs
    accuracies = []
    if model.get("val_accuracy") is not None:
        accuracies.append(f"{model['val_accuracy']:.1%} val")
    if model.get("test_accuracy") is not None:
        accuracies.append(f"{model['test_accuracy']:.1%} test")
    if accuracies:
        text = ", ".join(accuracies)
        groups.append(f"{accuracy_kind}: {text}" if accuracy_kind else text)
    if accuracy_kind == "final" and model.get("search_val_accuracy") is not None:
        groups.append(f"search-time: {model['search_val_accuracy']:.1%} val")
    parts = []
    macs, base_macs = model.get("macs"), (baseline or {}).get("macs")
    if macs is not None:
        parts.append(macs_text(macs, base_macs))
    if model.get("effective_macs") is not None:  # a hybrid sequence's kernel steps
        parts.append(f"{human_count(model['effective_macs'])} effective MACs")
    if model.get("params") is not None:
        parts.append(f"{human_count(model['params'])} params")
    if model.get("nonzero_params") is not None:
        parts.append(f"{human_count(model['nonzero_params'])} non-zero")
    if model.get("latency_ms") is not None:
        where = model.get("latency_device")
        parts.append(f"{model['latency_ms']:.2f} ms" + (f" on {where}" if where else ""))
    if parts:
        groups.append(", ".join(parts))
    return "; ".join(groups) or "—"


def budget_text(budget: dict[str, Any]) -> str:
    names = {"flops": "MACs ≤ {:.0%}", "macs": "MACs ≤ {}", "latency_ms": "latency ≤ {} ms"}
    parts = []
    for key, value in budget.items():
        if key == "params":
            parts.append(f"params ≤ {value:.0%}" if value <= 1 else f"params ≤ {value:g}")
        elif key == "max_accuracy_drop":
            parts.append(f"accuracy drop ≤ {value:.1%}")
        else:
            parts.append(names.get(key, key + " ≤ {}").format(value))
    return f"({', '.join(parts)})" if parts else ""


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def timestamp(value: Any) -> str:
    text = str(value or "")
    return text.replace("T", " ")[:19] if text else "—"


def comparison_table(base: dict[str, Any], best: dict[str, Any], title: str) -> Table:
    """Return the delivered model beside the unpruned one: costs with their ratio (and,
    after kernel or weight steps, effective MACs and non-zero parameters against the
    dense ones), the search-time accuracy, and final accuracies with their change."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("unpruned", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("pruned / unpruned", justify="right")
    rows = (
        ("MACs (batch 1)", "macs", "macs", human_count),
        ("effective MACs", "macs", "effective_macs", human_count),
        ("parameters", "params", "params", human_count),
        ("non-zero parameters", "params", "nonzero_params", human_count),
        ("size", "size_bytes", "size_bytes", human_bytes),
        ("latency, median", "latency_ms", "latency_ms", lambda v: f"{v:.3f} ms"),
    )
    for name, base_key, key, fmt in rows:
        a, b = base.get(base_key), best.get(key)
        if a and b is not None:
            table.add_row(name, fmt(a), fmt(b), f"{b / a:.1%}")
    if best.get("search_val_accuracy") is not None:
        table.add_row("search-time val accuracy", "", f"{best['search_val_accuracy']:.2%}", "")
    for name, key in (("val accuracy", "val_accuracy"), ("test accuracy", "test_accuracy")):
        if base.get(key) is not None and best.get(key) is not None:
            change = f"{best[key] - base[key]:+.2%}"
            table.add_row(f"final {name}", f"{base[key]:.2%}", f"{best[key]:.2%}", change)
    return table
