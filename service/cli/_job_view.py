"""How the CLI shows jobs: live progress, job summaries, the Pareto front."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from service.cli._console import console, human_count

if TYPE_CHECKING:
    from service.client import Client

__all__ = [
    "best_text",
    "budget_text",
    "duration",
    "follow_job",
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
                key = (job.get("status"), progress.get("trials_done"))
                if not seen or seen[-1] != key:
                    seen.append(key)
                    done, total = progress.get("trials_done", 0), progress.get("trials_total")
                    console.print(f"trials {done}/{total}  {watch_line(job)}")

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
    progress = job.get("progress") or {}
    parts = [styled(str(job.get("status"))), f"best: {escape(best_text(job, short=True))}"]
    eta = progress.get("eta_s")
    if eta is not None and job.get("status") not in ("succeeded", "failed", "cancelled"):
        parts.append(f"ETA {duration(eta)}")
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


def print_pareto(front: dict[str, Any], job_id: str) -> None:
    """Print a job's Pareto front (``ParetoPublic``) as a table, the chosen trial marked."""
    points = sorted(front.get("points", []), key=lambda p: (p.get("macs", 0), p.get("trial", 0)))
    best = front.get("best_trial")
    if not points:
        console.print(f"job {job_id} has no feasible finished trial yet")
    else:
        title = f"Pareto front of job {job_id[:8]}: {len(points)} trials"
        if front.get("hypervolume") is not None:
            title += f", hypervolume {front['hypervolume']:.3f}"
        table = Table(title=title)
        with_latency = any(p.get("latency_ms") is not None for p in points)
        columns = ["trial", "val accuracy", "MACs", "params"] + ["latency"] * with_latency
        for name in columns:
            table.add_column(name, justify="right")
        table.add_column("", no_wrap=True)
        for point in points:
            latency = point.get("latency_ms")
            chosen = point.get("trial") == best
            cells = [
                str(point.get("trial")),
                f"{point['val_accuracy']:.2%}" if point.get("val_accuracy") is not None else "—",
                human_count(point["macs"]) if point.get("macs") is not None else "—",
                human_count(point["params"]) if point.get("params") is not None else "—",
            ]
            if with_latency:
                cells.append(f"{latency:.3f} ms" if latency is not None else "—")
            cells.append("[bold green]← chosen[/]" if chosen else "")
            table.add_row(*cells, style="bold" if chosen else None)
        console.print(table)


def best_text(job: dict[str, Any], *, short: bool = False) -> str:
    """Return the job's best model in words: every measure, or (short) accuracy and MACs."""
    best = job.get("best")
    if not best:
        return "—"
    if short:
        base_macs = (job.get("baseline") or {}).get("macs")
        accuracy = best.get("val_accuracy")
        text = f"{accuracy:.1%}" if accuracy is not None else "?"
        if best.get("macs") is not None:
            macs = best["macs"]
            text += f" at {macs / base_macs:.0%} MACs" if base_macs else f" at {human_count(macs)}"
    else:
        text = model_text(best, job.get("baseline"))
    return f"{text} (trial {best['trial']})" if best.get("trial") is not None else text


def model_text(model: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    parts = []
    if model.get("val_accuracy") is not None:
        parts.append(f"{model['val_accuracy']:.1%} val")
    if model.get("test_accuracy") is not None:
        parts.append(f"{model['test_accuracy']:.1%} test")
    macs, base_macs = model.get("macs"), (baseline or {}).get("macs")
    if macs is not None:
        share = f" ({macs / base_macs:.0%})" if base_macs else ""
        parts.append(f"{human_count(macs)} MACs{share}")
    if model.get("params") is not None:
        parts.append(f"{human_count(model['params'])} params")
    if model.get("latency_ms") is not None:
        parts.append(f"{model['latency_ms']:.2f} ms")
    return ", ".join(parts) or "—"


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


def duration(seconds: float) -> str:
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def timestamp(value: Any) -> str:
    text = str(value or "")
    return text.replace("T", " ")[:19] if text else "—"
