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
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch
from _machine import Interference, machine
from _seed_recurrent_report import markdown
from search_quality import ensure_baseline, make_subset
from torch import nn

from models.cost import AnalyticCost, count_params, measure_cost, measure_latency
from models.data import load_dataset
from models.io import load_model
from models.prune import AgpRecurrentMasking, Plan, PruningGraph, build_pruning_graph
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


def unit_widths(model: nn.Module, graph: PruningGraph, target: int) -> Plan:
    """Return the widest near-uniform hidden widths whose model has at most ``target``
    parameters.

    Every layer keeps ``h`` or ``h + 1`` units; of all such plans the one with the most
    parameters not above ``target`` is returned (the narrowest one if none fits). The
    count is :class:`models.cost.AnalyticCost`'s, exact for recurrent stacks.
    """
    cost = AnalyticCost(model, graph)
    widest = min(g.channels for g in graph.groups)
    best: tuple[int, Plan] | None = None
    for h in range(1, widest + 1):
        for extra in product((0, 1), repeat=len(graph.groups)):
            widths = {
                g.name: min(h + e, g.channels) for g, e in zip(graph.groups, extra, strict=True)
            }
            plan = Plan(widths)
            params = cost.predict(plan).params
            fits = params <= target
            if best is None or (fits and (best[0] > target or params > best[0])):
                best = (params, plan)
    assert best is not None
    return best[1]


def _masked_weights(model: nn.Module) -> list[torch.Tensor]:
    """Return the recurrent weight matrices AGP masks (``weight_ih_l*``/``weight_hh_l*``)."""
    return [
        p
        for m in model.modules()
        if isinstance(m, nn.LSTM | nn.GRU)
        for n, p in m.named_parameters(recurse=False)
        if n.startswith(("weight_ih_l", "weight_hh_l"))
    ]


def weight_sparsity(model: nn.Module, target: int) -> float:
    """Return the smallest per-matrix sparsity at which ``model`` keeps at most ``target``
    non-zero parameters, counting as :func:`models.prune.magnitude_masks` rounds.

    Raises:
        ValueError: even a sparsity just below 1 leaves more than ``target`` non-zeros.
    """
    sizes = [w.numel() for w in _masked_weights(model)]
    others = count_params(model) - sum(sizes)

    def nonzero(s: float) -> int:
        return others + sum(n - round(s * n) for n in sizes)

    low, high = 0.0, 1.0 - 1e-9
    if nonzero(high) > target:
        raise ValueError(f"masking recurrent weights cannot reach {target} non-zero parameters")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if nonzero(mid) > target else (low, mid)
    return high


def recurrent_sparse_cost(model: nn.Module, shape: tuple[int, int]) -> dict[str, int]:
    """Return params, non-zero params, dense MACs and effective MACs of one sequence.

    Effective MACs are the dense ones less one MAC per exactly-zero recurrent weight per
    time step (each weight of ``weight_ih``/``weight_hh`` is used once per step): what a
    runtime skipping zero weights would do. ``measure_sparse_cost`` counts zero conv
    kernels only, so the recurrent zeros are counted here.
    """
    cost = measure_cost(model, shape)
    zeros = sum(int((w == 0).sum()) for w in _masked_weights(model))
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {
        "params": cost.params,
        "nonzero_params": nonzero,
        "macs": cost.macs,
        "effective_macs": cost.macs - shape[0] * zeros,
    }


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
    _option(parser, "--seeds", type=int, nargs="+", default=[0, 1, 2])
    _option(parser, "--fashion-root", default=FASHION_ROOT)
    _option(
        parser, "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "inferprune-bench"
    )


def run(args: argparse.Namespace, wait: Callable[[], None]) -> dict[str, Any]:
    """Run every method on every architecture, data set and seed; return the report."""
    quick = bool(getattr(args, "quick", False))
    specs = QUICK_DATASETS if quick else DATASETS
    seeds = args.seeds[:1] if quick else args.seeds
    names = args.rnn_datasets or list(DATASETS)
    started, interference = time.perf_counter(), Interference()
    cells: dict[str, Any] = {}
    for name in names:
        dataset = name
        if name == "fashion_mnist_seq":  # a class-balanced subset, as an .npz of 28x28 images
            dataset = make_subset(
                "fashion_mnist", (1, 28, 28), args.fashion_root, args.rnn_train_subset,
                args.rnn_test_subset, args.cache_dir / "28x28",
            )  # fmt: skip
        for arch in args.rnn_archs or ARCHS:
            cells[f"{arch} / {name}"] = {
                "arch": arch,
                "dataset": dataset,
                "seeds": [
                    run_cell(arch, dataset, specs[name], seed=seed, args=args, wait=wait)
                    for seed in seeds
                ],
            }
    return {
        "part": "recurrent",
        "settings": {
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
        },
        "seeds": seeds,
        "cells": cells,
        "seconds": time.perf_counter() - started,
        "interference_cores": interference.cores(),
        "machine": machine(),
    }
