"""Part (c) of ``seed_methods.py``: recurrent networks, hidden units vs AGP weight pruning.

Each trained LSTM/GRU classifier (2 layers of 64 units, ``lstm_classifier`` /
``gru_classifier``) is cut to a parameter budget (``--reductions``: 80 % and 90 % fewer
parameters than the unpruned model, every parameter counted: recurrent weights, their
biases and the classifier head) by two kinds of method, each fine-tuned the same number
of epochs from the same baseline:

* hidden-unit pruning (:mod:`models.prune._recurrent`): whole units go, their gate rows
  and the columns that read them with them, so the model is physically smaller. Every
  layer keeps the same number of units (give or take one), the largest such widths whose
  parameters fit the budget, and they are reached along a schedule of
  :mod:`models.schedules` (``one_shot``, ``iterative``, ``agp``), units ranked by l1;
* AGP weight pruning (:class:`models.prune.AgpRecurrentMasking`, Zhu & Gupta): the
  smallest weights of every ``weight_ih``/``weight_hh`` go along the cubic curve over the
  first half of the fine-tune, held at zero afterwards; the sparsity is the smallest at
  which the model's non-zero parameters fit the budget. Shapes stay dense.

Measured: parameters (dense and non-zero), MACs (dense, fvcore; effective: dense less
one MAC per zero recurrent weight per time step), test accuracy (on the seed's test
split, which neither training nor any choice here looked at) and onnxruntime latency
(batch 1, one thread, timed inside a quiet window: see :func:`quiet_window`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _machine import Interference, machine
from _quality_baselines import ensure_baseline, make_subset
from _seed_recurrent_budget import recurrent_sparse_cost, unit_widths, weight_sparsity
from _seed_recurrent_report import markdown
from torch import nn

from models.cost import measure_latency
from models.data import load_dataset
from models.io import load_model
from models.prune import AgpRecurrentMasking, build_pruning_graph
from models.schedules import (
    AGP_PRUNING_SHARE,
    ScheduleConfig,
    ScheduleContext,
    make_schedule,
    train_with_schedule,
)
from models.train import evaluate, fine_tune, steps_per_epoch, total_steps

__all__ = [
    "METHODS",
    "add_arguments",
    "markdown",
    "quiet_window",
    "recurrent_sparse_cost",
    "run",
    "unit_widths",
    "weight_sparsity",
]

logger = logging.getLogger("benchmarks.seed_methods")

ARCHS = ("lstm_classifier", "gru_classifier")
FASHION_ROOT = "/usr/share/datasets"
QUIET_FILE = Path("/tmp/inferprune-quiet")
LR = 0.02
BATCH = 64
CRITERION = "l1"
MASK_UPDATES = 20
"""AGP weight masks are recomputed this many times along the curve (Zhu & Gupta prune
every few steps, not every step)."""
LATENCY_WARMUP, LATENCY_REPEATS = 20, 300


@dataclass(frozen=True)
class SequenceData:
    """One data set of the part: its (T, F) shape and how long models train on it."""

    shape: tuple[int, int]
    base_epochs: int
    finetune_epochs: float


DATASETS = {
    "digits_seq": SequenceData((8, 8), base_epochs=60, finetune_epochs=20),
    "fashion_mnist_seq": SequenceData((28, 28), base_epochs=15, finetune_epochs=6),
}
QUICK_DATASETS = {
    "digits_seq": SequenceData((8, 8), base_epochs=2, finetune_epochs=1),
    "fashion_mnist_seq": SequenceData((28, 28), base_epochs=1, finetune_epochs=0.25),
}

METHODS: dict[str, ScheduleConfig | None] = {
    "units one_shot": ScheduleConfig("one_shot"),
    "units iterative": ScheduleConfig("iterative", steps=3),
    "units agp": ScheduleConfig("agp"),
    "weights agp": None,
}
"""Label → the schedule hidden units are cut along; None: AGP magnitude weight masks."""


@contextlib.contextmanager
def quiet_window(path: Path, poll_s: float = 5.0) -> Iterator[None]:
    """Hold the machine's quiet file while the block runs (others pause meanwhile).

    Waits while another process holds ``path``, creates it exclusively, and removes it
    when the block ends, also on an error. Keep the block short (under two minutes).
    """
    while True:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            logger.info("%s exists: waiting to time", path)
            time.sleep(poll_s)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def fashion_sequences(root: str, train: int, test: int, cache_dir: Path) -> str:
    """Return ``npz:<path>`` of a class-balanced Fashion-MNIST subset as (N, 28, 28)
    sequences (:func:`_quality_baselines.make_subset`'s images without their channel axis:
    a sequence model's ``.npz`` holds (N, T, F))."""
    images = Path(
        make_subset("fashion_mnist", (1, 28, 28), root, train, test, cache_dir).removeprefix("npz:")
    )
    path = images.with_name(f"{images.stem}-seq.npz")
    if not path.exists():
        with np.load(images) as data:
            arrays = {k: data[k][:, 0] if k.startswith("x_") else data[k] for k in data.files}
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return f"npz:{path}"


def _prune_units(
    model: nn.Module, data: Any, target: int, config: ScheduleConfig, epochs: float, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    graph = build_pruning_graph(model, data.input_shape, round_to=1)
    plan = unit_widths(model, graph, target)
    total = total_steps(epochs, None, steps_per_epoch(len(data.train), BATCH))

    def trainer(pruned: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        fine_tune(
            pruned, data.train, steps=steps, lr=LR, batch_size=BATCH, seed=seed,
            start_step=start, lr_window=window,
        )  # fmt: skip

    done = train_with_schedule(
        model,
        plan,
        make_schedule(config),
        total_steps=total,
        criterion=CRITERION,
        context=ScheduleContext(graph=graph, train=data.train, seed=seed),
        trainer=trainer,
    )
    return done.model, {"widths": [plan.width(g) for g in graph.groups], "steps": total}


def _prune_weights(
    model: nn.Module, data: Any, target: int, epochs: float, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    sparsity = weight_sparsity(model, target)
    pruned = copy.deepcopy(model)
    total = total_steps(epochs, None, steps_per_epoch(len(data.train), BATCH))
    end = max(1, round(total * AGP_PRUNING_SHARE))
    masking = AgpRecurrentMasking(pruned, sparsity, end, every=max(1, end // MASK_UPDATES))
    fine_tune(pruned, data.train, steps=total, lr=LR, batch_size=BATCH, seed=seed, on_step=masking)
    masking.masks.apply(pruned)
    return pruned, {"sparsity": round(sparsity, 5), "steps": total}


def _latency(model: nn.Module, shape: tuple[int, int]) -> dict[str, float]:
    lat = measure_latency(model, shape, threads=1, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)
    return {"median": lat.median_ms, "p10": lat.p10_ms, "p90": lat.p90_ms}


def run_cell(
    arch: str,
    dataset: str,
    spec: SequenceData,
    *,
    seed: int,
    args: argparse.Namespace,
    wait: Callable[[], None],
) -> dict[str, Any]:
    """Train (or reuse) one baseline and run every method at every reduction on it."""
    wait()
    weights, trained = ensure_baseline(
        seed, spec.base_epochs, args.cache_dir, arch=arch, dataset=dataset,
        input_shape=spec.shape,  # type: ignore[arg-type]
    )  # fmt: skip
    model, info = load_model(weights=weights)
    data = load_dataset(dataset, input_shape=spec.shape, num_classes=info.num_classes, seed=seed)
    base = recurrent_sparse_cost(model, spec.shape)
    wait()
    control = copy.deepcopy(model)  # the pruned models train this much more: so does it
    fine_tune(control, data.train, epochs=spec.finetune_epochs, lr=LR, batch_size=BATCH, seed=seed)
    baseline = {
        "test_accuracy": evaluate(model, data.test).top1,
        "finetuned_test_accuracy": evaluate(control, data.test).top1,
        **base,
        "weights_sha256": trained.get("weights_sha256"),
        "samples": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
    }
    models: list[nn.Module] = [model]
    runs: list[dict[str, Any]] = []
    for reduction in args.reductions:
        target = int((1.0 - reduction) * base["params"])
        for method in args.rnn_methods or list(METHODS):
            wait()
            started = time.perf_counter()
            config = METHODS[method]
            pruned, how = (
                _prune_weights(model, data, target, spec.finetune_epochs, seed)
                if config is None
                else _prune_units(model, data, target, config, spec.finetune_epochs, seed)
            )
            cost = recurrent_sparse_cost(pruned, spec.shape)
            runs.append(
                {
                    "method": method,
                    "reduction_target": reduction,
                    "target_params": target,
                    **how,
                    **cost,
                    "reduction": 1.0 - cost["nonzero_params"] / base["params"],
                    "test_accuracy": evaluate(pruned, data.test).top1,
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
            models.append(pruned)
            logger.info(
                "%s %s seed %d, %.0f %% fewer, %s: test %.4f (%.1f s)", arch, dataset, seed,
                100 * reduction, method, runs[-1]["test_accuracy"], runs[-1]["seconds"],
            )  # fmt: skip
    wait()
    with quiet_window(args.quiet_file):
        timed = [_latency(m, spec.shape) for m in models]
    baseline["latency_ms"] = timed[0]
    for record, latency in zip(runs, timed[1:], strict=True):
        record["latency_ms"] = latency
    return {"seed": seed, "baseline": baseline, "runs": runs}


def _option(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    """Add an option unless another part already has it (they share seeds, cache)."""
    with contextlib.suppress(argparse.ArgumentError):
        parser.add_argument(*flags, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this part's options (and the shared ones, if no other part added them)."""
    parser.add_argument(
        "--reductions", type=float, nargs="+", default=[0.8, 0.9],
        help="part recurrent: shares of the parameters removed (0.8 0.9)",
    )  # fmt: skip
    parser.add_argument(
        "--rnn-methods", nargs="+", choices=list(METHODS), help="part recurrent: methods"
    )
    parser.add_argument("--rnn-archs", nargs="+", choices=ARCHS, help="part recurrent: archs")
    parser.add_argument(
        "--rnn-datasets", nargs="+", choices=list(DATASETS), help="part recurrent: data sets"
    )
    parser.add_argument("--rnn-train-subset", type=int, default=12000)
    parser.add_argument("--rnn-test-subset", type=int, default=2000)
    parser.add_argument("--quiet-file", type=Path, default=QUIET_FILE)
    parser.add_argument(
        "--resume", action="store_true",
        help="part recurrent: reuse the cells an interrupted run with the same settings saved "
        "(in CACHE_DIR/recurrent-cells; the engine's code is not part of the key)",
    )  # fmt: skip
    _option(parser, "--seeds", type=int, nargs="+", default=[0, 1, 2])
    _option(parser, "--fashion-root", default=FASHION_ROOT)
    _option(
        parser, "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "inferprune-bench"
    )


def run(args: argparse.Namespace, wait: Callable[[], None]) -> dict[str, Any]:
    """Run every method on every architecture, data set and seed; return the report."""
    quick = bool(getattr(args, "quick", False))
    specs = QUICK_DATASETS if quick else DATASETS
    tag = "-quick" if quick else ""
    seeds = args.seeds[:1] if quick else args.seeds
    names = args.rnn_datasets or list(DATASETS)
    settings = {
        "datasets": {n: vars(specs[n]) for n in names},
        "reductions": args.reductions,
        "methods": args.rnn_methods or list(METHODS),
        "lr": LR,
        "batch_size": BATCH,
        "criterion": CRITERION,
        "agp_pruning_share": AGP_PRUNING_SHARE,
        "mask_updates": MASK_UPDATES,
        "fashion_subset": [args.rnn_train_subset, args.rnn_test_subset],
        "latency": {"threads": 1, "warmup": LATENCY_WARMUP, "repeats": LATENCY_REPEATS},
    }
    started, interference = time.perf_counter(), Interference()
    cells: dict[str, Any] = {}
    for name in names:
        dataset = name
        if name == "fashion_mnist_seq":
            dataset = fashion_sequences(
                args.fashion_root, args.rnn_train_subset, args.rnn_test_subset,
                args.cache_dir / "28x28",
            )  # fmt: skip
        for arch in args.rnn_archs or ARCHS:
            done = []
            for seed in seeds:
                key = json.loads(
                    json.dumps({"arch": arch, "dataset": dataset, "seed": seed, **settings})
                )  # as it reads back
                saved = args.cache_dir / "recurrent-cells" / f"{arch}-{name}-s{seed}{tag}.json"
                if args.resume and saved.exists() and json.loads(saved.read_text())["key"] == key:
                    done.append(json.loads(saved.read_text())["cell"])
                    logger.info("%s: reused (--resume)", saved)
                    continue
                done.append(run_cell(arch, dataset, specs[name], seed=seed, args=args, wait=wait))
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps({"key": key, "cell": done[-1]}))
            cells[f"{arch} / {name}"] = {"arch": arch, "dataset": dataset, "seeds": done}
    return {
        "part": "recurrent",
        "settings": settings,
        "seeds": seeds,
        "cells": cells,
        "seconds": time.perf_counter() - started,
        "interference_cores": interference.cores(),
        "machine": machine(),
    }
