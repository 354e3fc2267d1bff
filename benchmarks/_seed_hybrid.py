"""Part (a) of ``seed_methods.py``: hybrid pruning, channel vs kernel, at matched size.

The same trained baseline is pruned by channel-L1, kernel-L1, channel-similarity (fpgm),
kernel-similarity (fpgm) and sequences of them (:func:`models.prune.apply_sequence`),
every method to the same number of non-zero parameters, then trained identically:
BatchNorm recalibration and ``--epochs`` of fine-tuning with the removed kernels held at
zero (:func:`models.prune.keep_kernels_masked`). Measured: test accuracy, parameters,
non-zero parameters, dense MACs (fvcore), effective MACs (each convolution's MACs times
its share of kept kernels) and latency (onnxruntime, batch 1, one thread, median). Dense
runtimes multiply zero kernels like any others, so kernel pruning saves no latency unless
whole input channels go; the table shows it.

Matching: every method has one free share ``s`` (a sequence removes ``s`` at each step),
bisected until the pruned model's non-zero parameters are within ``--tolerance`` of
``--keep`` times the unpruned model's. Channel groups use ``round_to`` 1 so channel
methods match as closely as kernel ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _machine import Interference, machine
from _seed_common import BASE_EPOCHS, FASHION_ROOT, QUICK_BASE_EPOCHS, SHAPE, baselines
from torch import nn

from models.cost import Latency, measure_latency, measure_sparse_cost
from models.data import load_dataset
from models.io import load_model
from models.prune import (
    PruningStep,
    SparsePruned,
    apply_sequence,
    build_pruning_graph,
    keep_kernels_masked,
)
from models.train import evaluate, fine_tune, recalibrate_batchnorm

__all__ = ["HYBRID_METHODS", "add_arguments", "markdown", "run", "run_method"]

ARCH = "resnet20_cifar"
LR = 0.01
LATENCY_WARMUP, LATENCY_REPEATS = 20, 300

HYBRID_METHODS: dict[str, list[tuple[str, str]]] = {
    "channel-l1": [("channel", "l1")],
    "kernel-l1": [("kernel", "l1")],
    "channel-fpgm": [("channel", "fpgm")],
    "kernel-fpgm": [("kernel", "fpgm")],
    "channel-l1 → kernel-fpgm": [("channel", "l1"), ("kernel", "fpgm")],
    "channel-fpgm → kernel-l1": [("channel", "fpgm"), ("kernel", "l1")],
    "kernel-l1 → channel-l1": [("kernel", "l1"), ("channel", "l1")],
}
"""Label → its steps (granularity, criterion), each removing the matched share."""


def steps_at(method: str, share: float) -> list[PruningStep]:
    """Return the sequence of ``method`` with every step removing ``share``."""
    return [PruningStep(g, c, share) for g, c in HYBRID_METHODS[method]]


def match_share(
    prune: Callable[[float], SparsePruned], target: int, shape: Sequence[int], tolerance: float
) -> tuple[float, SparsePruned, int]:
    """Bisect the share whose pruned model has ``target`` non-zero parameters."""
    low, high = 0.0, 0.95
    best: tuple[float, SparsePruned, int] | None = None
    for _ in range(14):
        share = (low + high) / 2
        result = prune(share)
        nonzero = measure_sparse_cost(result.model, shape).nonzero_params
        if best is None or abs(nonzero - target) < abs(best[2] - target):
            best = (share, result, nonzero)
        if abs(nonzero - target) <= tolerance * target:
            break
        low, high = (share, high) if nonzero > target else (low, share)
    assert best is not None
    return best


def _time(model: nn.Module) -> Latency:
    """Time ``model`` at batch 1 on one thread (onnxruntime)."""
    return measure_latency(model, SHAPE, threads=1, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)


def _latency_record(latency: Latency) -> dict[str, float]:
    return {
        "latency_ms": latency.median_ms,
        "latency_p10_ms": latency.p10_ms,
        "latency_p90_ms": latency.p90_ms,
    }


def run_method(
    method: str,
    model: torch.nn.Module,
    data: Any,
    *,
    target: int,
    epochs: float,
    tolerance: float,
    seed: int,
    wait: Callable[[], None],
) -> dict[str, Any]:
    """Prune ``model`` by ``method`` to ``target`` non-zero parameters, fine-tune, measure."""
    shape = data.input_shape
    graph = build_pruning_graph(model, shape, round_to=1)
    calib = list(data.train.batches(32, shuffle=True, seed=seed, limit=4))
    started = time.monotonic()
    share, result, _ = match_share(
        lambda s: apply_sequence(
            model, steps_at(method, s), calib, input_shape=shape, graph=graph, seed=seed
        ),
        target,
        shape,
        tolerance,
    )
    matched_s = time.monotonic() - started
    pruned = result.model
    wait()
    recalibrate_batchnorm(pruned, data.train, seed=seed)
    with keep_kernels_masked(pruned, result.masks):
        fine_tune(pruned, data.train, epochs=epochs, lr=LR, seed=seed)
    cost = measure_sparse_cost(pruned, shape)
    wait()
    latency = _time(pruned)
    return {
        "method": method,
        "seed": seed,
        "steps": [s.to_dict() for s in steps_at(method, share)],
        "share": round(share, 4),
        "test_accuracy": evaluate(pruned, data.test).top1,
        "val_accuracy": evaluate(pruned, data.val).top1,
        "params": cost.params,
        "nonzero_params": cost.nonzero_params,
        "macs": cost.macs,
        "effective_macs": cost.effective_macs,
        **_latency_record(latency),
        "kernels_removed": result.masks.removed(),
        "plan": dict(result.plan),
        "match_s": round(matched_s, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def _option(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    """Add an option unless another part already has it (they share seeds, data, cache)."""
    try:
        parser.add_argument(*flags, **kwargs)
    except argparse.ArgumentError:
        pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this part's options (and the shared ones, if no other part added them)."""
    parser.add_argument(
        "--methods", nargs="+", choices=list(HYBRID_METHODS), help="part hybrid: methods"
    )
    parser.add_argument(
        "--keep", type=float, default=0.35, help="part hybrid: non-zero params kept (0.35)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="part hybrid: matching tolerance"
    )
    _option(parser, "--seeds", type=int, nargs="+", default=[0, 1, 2])
    _option(parser, "--epochs", type=float, default=6.0, help="fine-tune epochs")
    _option(parser, "--train-subset", type=int, default=3000)
    _option(parser, "--test-subset", type=int, default=1000)
    _option(parser, "--fashion-root", default=FASHION_ROOT)
    _option(
        parser, "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "inferprune-bench"
    )


def run(args: argparse.Namespace, wait: Callable[[], None]) -> dict[str, Any]:
    """Run every method on every data set and seed; return the report."""
    quick = bool(getattr(args, "quick", False))
    seeds, epochs = ([0], 0.5) if quick else (args.seeds, args.epochs)
    base_epochs = QUICK_BASE_EPOCHS if quick else BASE_EPOCHS
    methods = args.methods or list(HYBRID_METHODS)
    started, interference = time.perf_counter(), Interference()
    cells: dict[str, Any] = {}
    for baseline in baselines(args, seeds, base_epochs, wait, arch=ARCH):
        dataset, seed = baseline.dataset, baseline.seed
        cell = cells.setdefault(baseline.label, {"dataset": dataset, "baselines": {}, "runs": []})
        model, info = load_model(weights=baseline.weights)
        data = load_dataset(dataset, input_shape=SHAPE, num_classes=info.num_classes, seed=seed)
        base = measure_sparse_cost(model, SHAPE)
        wait()
        cell["baselines"][str(seed)] = {
            "test_accuracy": evaluate(model, data.test).top1,
            "params": base.params,
            "macs": base.macs,
            **_latency_record(_time(model)),
            "epochs": baseline.epochs,
        }
        target = round(args.keep * base.params)
        for method in methods:
            cell["runs"].append(
                run_method(
                    method,
                    model,
                    data,
                    target=target,
                    epochs=epochs,
                    tolerance=args.tolerance,
                    seed=seed,
                    wait=wait,
                )  # fmt: skip
            )
    return {
        "part": "hybrid",
        "settings": {
            "arch": ARCH,
            "input_shape": list(SHAPE),
            "keep": args.keep,
            "tolerance": args.tolerance,
            "finetune_epochs": epochs,
            "lr": LR,
            "round_to": 1,
            "base_epochs": base_epochs,
        },
        "seeds": seeds,
        "methods": methods,
        "datasets": cells,
        "seconds": time.perf_counter() - started,
        "interference_cores": interference.cores(),
        "machine": machine(),
    }


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    if len(values) < 2:
        return f"{_mean(values) * scale:.2f}"
    return f"{_mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def _latency(runs: list[dict[str, Any]]) -> str:
    """Return the runs' median latency and its p10–p90 (means over seeds; older reports
    hold the median only)."""
    text = f"{_mean([r['latency_ms'] for r in runs]):.3f}"
    if all("latency_p10_ms" in r for r in runs):
        low = _mean([r["latency_p10_ms"] for r in runs])
        high = _mean([r["latency_p90_ms"] for r in runs])
        text += f" ({low:.3f}–{high:.3f})"
    return text


def markdown(report: dict[str, Any]) -> str:
    """Return the report as markdown: one table per data set, means over seeds."""
    s, m = report["settings"], report["machine"]
    lines = [
        "# Hybrid pruning: channel vs kernel, quantitative vs similarity, and sequences",
        "",
        f"{s['arch']} at {'x'.join(map(str, s['input_shape']))}; seeds "
        f"{', '.join(map(str, report['seeds']))} (each seed: its own split and baseline, "
        "shared with part (b)). Every method is pruned to "
        f"{s['keep']:.0%} of the unpruned parameters counted as non-zero (one share per "
        f"method bisected to within {s['tolerance']:.0%}; a sequence removes that share at "
        "each step; channel groups with round_to 1), then BatchNorm recalibration and "
        f"{s['finetune_epochs']:g} epochs of fine-tuning (lr {s['lr']}, cosine, batch 64) "
        "with removed kernels held at zero.",
        "",
        f"Latency: onnxruntime, batch 1, one thread, {LATENCY_WARMUP} warm-up and "
        f"{LATENCY_REPEATS} timed runs, median (p10–p90), mean over seeds. **Dense runtimes "
        "multiply zeroed kernels like any other weights**: kernel pruning lowers the "
        "non-zero parameters and the *effective* MACs (what a runtime skipping zero "
        "kernels would do), not the dense MACs or the measured latency, unless whole "
        "input channels go (then the cut is physical).",
    ]
    for label, cell in report["datasets"].items():
        bases = list(cell["baselines"].values())
        lines += [
            "",
            f"## {label} (`{Path(cell['dataset'].removeprefix('npz:')).name}`)",
            "",
            f"Unpruned ({bases[0]['epochs']} epochs of `inferprune train`): test "
            f"{_mean_std([b['test_accuracy'] for b in bases])} %, "
            f"{bases[0]['params'] / 1e3:.1f} K params, {bases[0]['macs'] / 1e6:.2f} M MACs, "
            f"{_latency(bases)} ms.",
            "",
            "| method | share | test acc % | params K | non-zero K | dense MACs M "
            "| effective MACs M | latency ms, median (p10–p90) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method in report["methods"]:
            runs = [r for r in cell["runs"] if r["method"] == method]
            if not runs:
                continue
            lines.append(
                f"| {method} | {_mean([r['share'] for r in runs]):.3f} "
                f"| {_mean_std([r['test_accuracy'] for r in runs])} "
                f"| {_mean([r['params'] for r in runs]) / 1e3:.1f} "
                f"| {_mean([r['nonzero_params'] for r in runs]) / 1e3:.1f} "
                f"| {_mean([r['macs'] for r in runs]) / 1e6:.2f} "
                f"| {_mean([r['effective_macs'] for r in runs]) / 1e6:.2f} "
                f"| {_latency(runs)} |"
            )
    for note in report.get("notes", []):
        lines += ["", note]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch on {m['torch_threads']} thread; "
        f"torch {m['libraries']['torch']}, onnxruntime {m['libraries']['onnxruntime']}, "
        f"torch-pruning {m['libraries']['torch-pruning']}; finished {m['finished_at']}. "
        f"Other processes took {report['interference_cores']} cores on average during the "
        f"run. Total {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
