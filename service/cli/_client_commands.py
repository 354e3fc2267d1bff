"""``status``, ``pareto``, ``download``, ``cancel``, ``jobs``: use a running server.

These commands only speak HTTP (through :class:`service.client.Client`); the search runs
on the server's workers. The server and token come from ``--server``/``--token``, else
``INFERPRUNE_SERVER``/``INFERPRUNE_TOKEN``, else the ``client.json`` that
``inferprune serve`` saved in its data folder. ``submit`` lives in :mod:`._submit` and
shares this module's server options and ``--watch`` handling.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from service.cli._arguments import add_json_argument, positive_float, positive_int
from service.cli._console import console, human_bytes, print_json
from service.cli._job_view import best_text, follow_job, print_job, print_pareto, styled, timestamp

if TYPE_CHECKING:
    from service.client import Client

_FORMATS = {"safetensors": "safetensors", "onnx": "onnx", "pt2": "pt2", "torchscript": "pt"}


def register(commands: Any) -> None:
    """Add the commands that follow and fetch jobs on a server."""
    status = _command(
        commands,
        "status",
        help="show a job's status and progress (--watch to follow it to the end)",
        description="Show a job: status, trials done, the best model so far, timings. "
        "With --watch, follow it with a progress bar until it finishes; the exit status "
        "is then 0 if it succeeded and 1 if it failed or was cancelled.",
    )
    _add_watch_arguments(status, flag="--watch")
    status.set_defaults(handler=run_status)

    pareto = _command(
        commands,
        "pareto",
        help="show a job's accuracy-versus-cost front",
        description="List the non-dominated trials of a job (no other trial is both more "
        "accurate and cheaper) and mark the one the job chose.",
    )
    pareto.add_argument(
        "--png",
        nargs="?",
        const="",
        type=str,
        metavar="FILE",
        help="also save the plot as a PNG (default name: pareto-<id8>.png)",
    )
    pareto.set_defaults(handler=run_pareto)

    download = _command(
        commands,
        "download",
        help="download a pruned model",
        description="Download the pruned model the job chose (or any kept trial's) as a "
        "file that loads without inferprune's search code. The file appears only once "
        "complete.",
    )
    download.add_argument(
        "--trial",
        type=int,
        metavar="N",
        help="a trial number (`inferprune pareto ID` lists those kept); default: the best",
    )
    download.add_argument(
        "--format",
        choices=tuple(_FORMATS),
        default="safetensors",
        help="safetensors (default; `models.io.load_pruned` rebuilds it), onnx, pt2 "
        "(torch.export) or torchscript",
    )
    download.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT",
        help="file or existing folder to write to (default: <id8>[-trialN].<format> here)",
    )
    download.set_defaults(handler=run_download)

    cancel = _command(
        commands,
        "cancel",
        help="cancel a job",
        description="Ask the server to stop a job: no new trial starts, running trials "
        "finish, and the job ends as cancelled.",
    )
    cancel.set_defaults(handler=run_cancel)

    jobs = _command(commands, "jobs", help="list your jobs, newest first", job_id=False)
    jobs.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="jobs per page (default 20)"
    )
    jobs.add_argument(
        "--offset", type=_non_negative_int, default=0, metavar="K", help="skip K jobs"
    )
    jobs.set_defaults(handler=run_jobs)

    devices = _command(
        commands,
        "devices",
        job_id=False,
        help="list your target devices (registered by `inferprune agent`)",
        description="List the devices whose agents registered with the server under your "
        "tenant: what they run, when an agent last asked for work, and their measurement "
        "queue. A job measures latency on one with --latency-target NAME.",
    )
    devices.set_defaults(handler=run_devices)


def _command(commands: Any, name: str, *, job_id: bool = True, **texts: str) -> Any:
    parser = commands.add_parser(name, **texts)
    if job_id:
        parser.add_argument("job_id", metavar="ID", help="job id (as `submit` or `jobs` shows)")
    group = parser.add_argument_group("server")
    group.add_argument(
        "--server",
        metavar="URL",
        help="server address, e.g. http://gpu-box:8000 (default: $INFERPRUNE_SERVER, else "
        "the one `inferprune serve` saved in the data folder)",
    )
    group.add_argument(
        "--token",
        metavar="T",
        help="API token (default: $INFERPRUNE_TOKEN, else the saved one; the variable keeps "
        "it out of `ps` and shell history)",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="data folder of a local `inferprune serve` holding client.json "
        "(default: $INFERPRUNE_DATA_DIR or ./inferprune-data)",
    )
    add_json_argument(parser)
    return parser


def _add_watch_arguments(parser: argparse.ArgumentParser, *, flag: str) -> None:
    parser.add_argument(
        flag, dest="watch", action="store_true", help="follow the job until it finishes"
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="S",
        help="seconds between updates while watching (default 1)",
    )


def _connect(args: argparse.Namespace) -> Client:
    from service.client import Client

    return Client.from_environment(args.server, args.token, args.data_dir)


def _follow(client: Client, job_id: str, args: argparse.Namespace) -> int:
    """Follow a job like ``status --watch``; return 0 if it succeeded, else 1."""
    job = follow_job(client, job_id, interval=args.interval, quiet=args.json)
    if job is None:
        return 130
    if args.json:
        print_json(job)
    else:
        print_job(job)
    return 0 if job.get("status") == "succeeded" else 1


def run_status(args: argparse.Namespace) -> int:
    """Show the job, or follow it."""
    with _connect(args) as client:
        if args.watch:
            return _follow(client, args.job_id, args)
        job = client.job(args.job_id)
    if args.json:
        print_json(job)
    else:
        print_job(job)
    return 0


def run_pareto(args: argparse.Namespace) -> int:
    """Show the front; save the plot if asked."""
    with _connect(args) as client:
        front = client.pareto(args.job_id)
        png: Path | None = None
        if args.png is not None:
            png = Path(args.png or f"pareto-{args.job_id[:8]}.png")
            png.write_bytes(client.pareto_png(args.job_id))
    if args.json:
        print_json(front | ({"png": str(png)} if png else {}))
        return 0
    print_pareto(front, args.job_id)
    if png is not None:
        console.print(f"plot written to {png}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download the model file."""
    output = args.output
    if output is None:
        trial = f"-trial{args.trial}" if args.trial is not None else ""
        output = Path(f"{args.job_id[:8]}{trial}.{_FORMATS[args.format]}")
    with _connect(args) as client:
        with console.status(f"downloading {args.format}...", spinner="dots"):
            written = client.download(args.job_id, output, trial=args.trial, format=args.format)
    size = written.stat().st_size
    if args.json:
        print_json(
            {
                "job": args.job_id,
                "trial": args.trial,
                "format": args.format,
                "path": str(written),
                "size_bytes": size,
            }
        )
    else:
        console.print(f"wrote {written} ({human_bytes(size)})")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    """Request cancellation."""
    with _connect(args) as client:
        job = client.cancel(args.job_id)
    if args.json:
        print_json(job)
    elif job.get("status") == "cancelled":
        console.print(f"job {job['id']} is cancelled")
    else:
        console.print(
            f"cancel requested for job {job['id']} ({styled(job['status'])}): no new trial "
            "starts; running trials finish first"
        )
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    """List jobs."""
    with _connect(args) as client:
        page = client.jobs(limit=args.limit, offset=args.offset)
    if args.json:
        print_json(page)
        return 0
    items = page.get("items", [])
    if not items:
        console.print("no jobs here yet; queue one with `inferprune submit`")
        return 0
    table = Table()
    table.add_column("id", no_wrap=True)  # whole, so it can be copied into other commands
    for name in ("status", "model", "trials", "best", "created"):
        table.add_column(name, justify="right" if name == "trials" else "left")
    for job in items:
        spec, progress = job.get("spec") or {}, job.get("progress") or {}
        table.add_row(
            str(job.get("id")),
            styled(str(job.get("status"))),
            escape(f"{spec.get('arch', '?')} / {spec.get('dataset', '?')}"),
            f"{progress.get('trials_done', 0)}/{progress.get('trials_total', '?')}",
            escape(best_text(job, short=True)),
            timestamp(job.get("created_at"))[:16],
        )
    console.print(table)
    first, total = page.get("offset", 0) + 1, page.get("total", len(items))
    footer = f"jobs {first}–{first + len(items) - 1} of {total}"
    if first + len(items) - 1 < total:
        footer += f"; next page: --offset {first + len(items) - 1}"
    console.print(footer)
    return 0


def _non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def run_devices(args: argparse.Namespace) -> int:
    """List the tenant's target devices."""
    with _connect(args) as client:
        listing = client.devices()
    if args.json:
        print_json(listing)
        return 0
    items = listing.get("items", [])
    if not items:
        console.print(
            "no devices yet: run `inferprune agent --server URL --token T --device NAME` on "
            "one (a token for it: `inferprune token create --tenant NAME --agent`)"
        )
        return 0
    table = Table(title="target devices")
    for column in ("name", "live agents", "last seen", "cpu", "cores", "onnxruntime"):
        table.add_column(column)
    for column in ("waiting", "measuring", "done"):
        table.add_column(column, justify="right")
    for d in items:
        spec = d.get("spec") or {}
        table.add_row(
            escape(d["name"]),
            f"[green]{d['agents_live']}[/]" if d["live"] else "[red]no[/]",
            timestamp(d["last_seen_at"]),
            escape(str(spec.get("cpu", "?"))),
            str(spec.get("cores", "?")),
            escape(str(spec.get("onnxruntime", "?"))),
            str(d["queued"]),
            str(d["measuring"]),
            str(d["measured"]),
        )
    console.print(table)
    return 0
