"""``inferprune demo``: the whole product on this machine (:data:`MEASURED_DURATION`).

Starts the embedded server (SQLite, two workers) on a free loopback port, trains a
small baseline on the bundled ``digits`` set, submits it through the HTTP API with a
50 % FLOPs budget, follows the search, shows the Pareto front and the baseline-versus-
pruned table, downloads the ONNX model and runs it in onnxruntime on the test split,
then shuts everything down.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.cli._console import console, progress_bar
from service.cli._job_view import comparison_table, follow_job, print_pareto
from service.errors import ServiceError

if TYPE_CHECKING:
    from service.client import Client

ARCH = "resnet20_cifar"
SHAPE = (3, 32, 32)
MEASURED_DURATION = "69-76 s measured on quiet 2-core VMs, once installed"
"""How long the demo takes, as measured (one run, defaults); quoted by ``--help``."""


def register(commands: Any) -> None:
    """Add the ``demo`` command."""
    demo = commands.add_parser(
        "demo",
        help=f"run the whole service on this machine ({MEASURED_DURATION})",
        description="Start the embedded server with two workers on a free loopback port, "
        "train a ResNet-20 on the bundled digits set, prune it to half its MACs through "
        "the HTTP API, show the Pareto front and the before/after table, and run the "
        "downloaded ONNX model in onnxruntime. Nothing is downloaded from the internet.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("inferprune-demo"),
        metavar="DIR",
        help="where the ONNX model, plot and report go (default: ./inferprune-demo)",
    )
    demo.add_argument(
        "--trials", type=int, default=12, metavar="N", help="candidates to evaluate (default: 12)"
    )
    demo.add_argument(
        "--baseline-epochs",
        type=float,
        default=6.0,
        metavar="E",
        help="epochs to train the baseline (default: 6)",
    )
    demo.add_argument(
        "--workers", type=int, default=2, metavar="N", help="worker processes (default: 2)"
    )
    demo.set_defaults(handler=run_demo)


def _start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], Client]:
    from service.cli._server import _free_port

    port = _free_port("127.0.0.1")
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    from service.client import ClientError, wait_for_local_server

    try:
        return process, wait_for_local_server(data_dir, process)
    except ClientError:
        _stop_server(process)
        raise


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _train_baseline(out: Path, epochs: float) -> tuple[Path, dict[str, float]]:
    import torch

    from models.data import load_dataset
    from models.io import CheckpointInfo, export_onnx, save_pruned
    from models.prune import Plan
    from models.train import evaluate, fine_tune
    from models.zoo import build_model

    torch.manual_seed(0)
    data = load_dataset("digits", input_shape=SHAPE)
    model = build_model(ARCH, data.num_classes, SHAPE)
    with progress_bar(f"training a {ARCH} baseline on digits", None) as bar:
        fine_tune(
            model,
            data.train,
            epochs=epochs,
            lr=0.05,
            batch_size=64,
            seed=0,
            on_step=lambda p: bar.update(
                0, total=p.total_steps, completed=p.step, status=f"loss {p.loss:.3f}"
            ),
        )
    norm = data.normalization
    info = CheckpointInfo(
        ARCH,
        data.num_classes,
        SHAPE,
        Plan(),
        normalization={"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
    )
    path = save_pruned(model, out / "baseline.safetensors", info)
    export_onnx(model, SHAPE, out / "baseline.onnx")  # timed beside the pruned one at the end
    return path, {"val": evaluate(model, data.val).top1, "test": evaluate(model, data.test).top1}


def _onnx_accuracy(path: Path) -> tuple[float, int]:
    import numpy as np
    import onnxruntime as ort

    from models.data import load_dataset

    data = load_dataset("digits", input_shape=SHAPE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in data.test.batches(128):
        logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        correct += int((np.argmax(logits, axis=1) == y.numpy()).sum())
        total += len(y)
    return correct / total, total


ALONE_ROUNDS = 5
"""Rounds of the closing latency comparison: each times the unpruned and the pruned model
in turn (:data:`ALONE_WARMUP` untimed runs, :data:`ALONE_REPEATS` timed), so that a
disturbance of the machine falls on both."""
ALONE_WARMUP = 20
ALONE_REPEATS = 200


def _latency_alone(baseline: Path, pruned: Path) -> tuple[float, float]:
    """Return the median one-thread onnxruntime latency (ms, batch 1) of the two ONNX
    models, each the median of :data:`ALONE_ROUNDS` interleaved rounds' medians."""
    import statistics

    from models.cost import measure_onnx_latency

    models = (baseline.read_bytes(), pruned.read_bytes())
    rounds: tuple[list[float], list[float]] = ([], [])
    for _ in range(ALONE_ROUNDS):
        for model, medians in zip(models, rounds, strict=True):
            timed = measure_onnx_latency(model, warmup=ALONE_WARMUP, repeats=ALONE_REPEATS)
            medians.append(timed.median_ms)
    return statistics.median(rounds[0]), statistics.median(rounds[1])


def _log_tail(path: Path, lines: int = 15) -> str:
    """Return the end of the server's log (its folder is about to be removed)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; return 0 when the pruned ONNX model ran.

    The server's data folder (its database, and ``client.json`` with a live token) is a
    temporary folder removed on the way out, also after an error or Ctrl-C; ``--out``
    gets only the models, the plot and the job as the API shows it.
    """
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferprune-demo-", ignore_cleanup_errors=True) as tmp:
        status = _run_in(Path(tmp), out, args)
    if status == 0:
        console.rule(f"done in {time.monotonic() - started:.0f} s")
    return status


def _run_in(data_dir: Path, out: Path, args: argparse.Namespace) -> int:
    console.rule("[bold]inferprune demo")
    console.print(f"1/5 starting the server with {args.workers} workers (data in {data_dir})")
    try:
        process, client = _start_server(data_dir, args.workers)
    except ServiceError as exc:
        tail = _log_tail(data_dir / "server.log")
        raise ServiceError(
            f"{exc.message}; the server's log ends:\n{tail}", code=exc.code
        ) from None
    try:
        console.print(f"    serving on {client.server} (API docs at {client.server}/docs)")
        console.print(f"2/5 training the baseline ({args.baseline_epochs:g} epochs)")
        weights, accuracy = _train_baseline(out, args.baseline_epochs)
        console.print(f"    unpruned baseline: {accuracy['test']:.2%} test accuracy")
        spec = {
            "arch": ARCH,
            "input_shape": list(SHAPE),
            "dataset": "digits",
            "budget": {"flops": 0.5},
            "objective": "constrained",
            "search": {"trials": args.trials, "sampler": "tpe", "seed": 0},
            "finetune": {"epochs_per_trial": 1, "final_epochs": 3, "lr": 0.02},
            "latency": {"backend": "onnxruntime", "threads": 1},
        }
        with client:
            job = client.submit(spec, weights=weights, idempotency_key=f"demo-{time.time()}")
            console.print(
                f"3/5 submitted job {job['id']} through POST /v1/jobs: "
                f"{args.trials} trials, keep at most 50 % of the MACs"
            )
            final = follow_job(client, job["id"], interval=1.0)
            if final is None:
                return 130
            if final["status"] != "succeeded":
                error = final.get("error") or {}
                console.print(f"[red]job {final['status']}:[/] {error.get('message', '')}")
                return 1
            console.print(
                "4/5 results (search-time accuracy: a trial's, after its short fine-tune; "
                "final: the chosen model's, after the final fine-tune; the unpruned "
                "model's: as trained)"
            )
            print_pareto(client.pareto(job["id"]), job["id"], final)
            trial = final["best"]["trial"]
            title = f"unpruned vs pruned (trial {trial})"
            console.print(comparison_table(final["baseline"], final["best"], title))
            onnx = client.download(job["id"], out / "model.onnx", format="onnx")
            (out / "pareto.png").write_bytes(client.pareto_png(job["id"]))
            (out / "job.json").write_text(json.dumps(final, indent=2))
        test_accuracy, samples = _onnx_accuracy(onnx)
        console.print(
            f"5/5 ran the downloaded ONNX model in onnxruntime on {samples} test "
            f"images: {test_accuracy:.2%} test accuracy (the service measured "
            f"{final['best']['test_accuracy']:.2%} final test accuracy)"
        )
    finally:
        client.close()
        console.print("shutting down the server and workers...")
        _stop_server(process)
    unpruned_ms, pruned_ms = _latency_alone(out / "baseline.onnx", onnx)
    console.print(
        f"    timed again with the server stopped (onnxruntime, 1 thread, batch 1, "
        f"{ALONE_ROUNDS} interleaved rounds of {ALONE_REPEATS} runs): unpruned "
        f"{unpruned_ms:.3f} ms, pruned {pruned_ms:.3f} ms ({pruned_ms / unpruned_ms:.2f}x); "
        "the table's latencies were timed by a worker while the search shared the cores"
    )
    console.print(
        f"files in {out.resolve()}: baseline.safetensors, baseline.onnx, model.onnx, "
        "pareto.png, job.json"
    )
    return 0
