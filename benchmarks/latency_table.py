"""Does the layer latency table predict a pruned model's onnxruntime latency?

For each model (random init: latency does not depend on the weights; onnxruntime CPU,
1 thread, batch 1, optimization level ``all``):

1. ``LatencyTable.build`` times every distinct layer shape alone (``onnxruntime_timer``:
   ``--table-warmup`` and ``--table-repeats`` runs, lowest median of ``--table-rounds``
   passes); then the ``--calibration`` plans of ``calibration_plans`` (the unpruned model
   first) are pruned (``apply_plan``, l1), exported (``onnx_model_bytes``) and measured
   end to end, and ``fit`` calibrates the table. ``build_s`` is the wall time of both
   (``table_s`` + ``calibration_s``).
2. ``--plans`` random plans (each group's width drawn uniformly from its allowed widths,
   seeded by ``--seed``; never a calibration plan) are pruned, exported and measured end
   to end with ``measure_onnx_latency`` (``--warmup``, ``--repeats``; ``--rounds``
   passes over all the plans, each plan reporting its lowest median, since other
   processes only ever add time), and compared with ``predict``; so are
   ``--depth-plans`` more that also remove residual blocks, for a model that has some.

Per model it reports the median, 90th-percentile and largest absolute relative error,
the share of plans within ±10 %, the same for the uncalibrated kernel sum, the fit, the
layer shapes measured, the build time and one ``predict`` call's time; and the CPU other
processes took meanwhile (``Interference``) with the load average before and after.

Writes ``latency_table.json`` and ``latency_table.md`` to ``--out-dir``. Run from the
repository root on an otherwise quiet machine (about 15 minutes on 2 cores)::

    .venv/bin/python benchmarks/latency_table.py
    .venv/bin/python benchmarks/latency_table.py --models resnet56_cifar --plans 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import Interference, machine
from torch import nn

from models.cost import (
    LatencyTable,
    calibration_plans,
    measure_onnx_latency,
    onnxruntime_timer,
)
from models.io import onnx_model_bytes
from models.prune import PruningGraph, apply_plan, build_pruning_graph
from models.zoo import build_model

logger = logging.getLogger("benchmarks.latency_table")

IMAGENET = ((3, 224, 224), 1000)
MODELS: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet18": IMAGENET,
    "mobilenet_v2": IMAGENET,
    "efficientnet_b0": IMAGENET,
    "resnet56_cifar": ((3, 32, 32), 10),
}
"""Model -> (input shape, classes) it is benchmarked at."""

TOLERANCE = 0.10
WITHIN_TARGET = 0.95
BUILD_TARGET_S = 120.0


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _exported(model: nn.Module, graph: PruningGraph, plan: Mapping[str, int]) -> bytes:
    shape = graph.input_shape
    return onnx_model_bytes(apply_plan(model, plan, input_shape=shape, graph=graph), shape)


def _measure(models: Sequence[bytes], args: argparse.Namespace) -> list[float]:
    """Return each model's lowest median over ``args.rounds`` passes over all of them."""
    best = [float("inf")] * len(models)
    for _ in range(args.rounds):
        for i, data in enumerate(models):
            latency = measure_onnx_latency(data, warmup=args.warmup, repeats=args.repeats)
            best[i] = min(best[i], latency.median_ms)
    return best


def _random_plans(graph: PruningGraph, count: int, seed: int) -> list[dict[str, int]]:
    rng = random.Random(seed)
    return [{g.name: rng.choice(g.allowed_widths()) for g in graph.groups} for _ in range(count)]


def _depth_plans(graph: PruningGraph, count: int, seed: int) -> list[dict[str, int]]:
    """Return random plans that also remove blocks: each removable block goes with a
    probability drawn per plan (from none to nearly all)."""
    rng = random.Random(seed)
    plans = []
    for plan in _random_plans(graph, count, seed):
        share = rng.random()
        plans.append(plan | {b: 0 for b in graph.blocks if rng.random() < share})
    return plans


def _errors(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    rel = np.abs(np.asarray(predicted) / np.asarray(measured) - 1.0)
    return {
        "median_abs_error": float(np.median(rel)),
        "p90_abs_error": float(np.percentile(rel, 90)),
        "max_abs_error": float(rel.max()),
        "within_10pct": float(np.mean(rel <= TOLERANCE)),
    }


def benchmark_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build, calibrate and check the table of one model (see the module docstring)."""
    shape, classes = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, classes, shape)
    graph = build_pruning_graph(model, shape)
    load_before = _load()
    interference = Interference()

    started = time.perf_counter()
    timer = onnxruntime_timer(
        warmup=args.table_warmup, repeats=args.table_repeats, rounds=args.table_rounds
    )
    table = LatencyTable.build(model, graph, timer)
    table_s = time.perf_counter() - started
    cal_plans = calibration_plans(graph, args.calibration, args.seed)
    cal_measured = _measure([_exported(model, graph, p) for p in cal_plans], args)
    fitted = table.fit(list(zip(cal_plans, cal_measured, strict=True)))
    build_s = time.perf_counter() - started
    logger.info(
        "%s: %d shapes in %.1f s, built in %.1f s", name, table.shape_count, table_s, build_s
    )

    plans = _random_plans(graph, args.plans, args.seed + 1)
    measured = _measure([_exported(model, graph, p) for p in plans], args)
    predicted = [fitted.predict(p) for p in plans]
    raw = [table.predict_raw(p) for p in plans]
    calls = 50
    start = time.perf_counter()
    for plan in plans[:calls]:
        fitted.predict(plan)
    predict_us = (time.perf_counter() - start) / min(calls, len(plans)) * 1e6
    errors = _errors(predicted, measured)
    depth: dict[str, Any] | None = None
    if graph.blocks and args.depth_plans:
        deep = _depth_plans(graph, args.depth_plans, args.seed + 2)
        deep_measured = _measure([_exported(model, graph, p) for p in deep], args)
        deep_predicted = [fitted.predict(p) for p in deep]
        depth = {
            "plans": len(deep),
            "blocks_removed_mean": statistics.fmean(len(graph.removed_blocks(p)) for p in deep),
            "removable_blocks": len(graph.blocks),
            **_errors(deep_predicted, deep_measured),
        }
        logger.info(
            "%s, plans removing blocks: median error %.1f %%",
            name,
            100 * depth["median_abs_error"],
        )
    logger.info(
        "%s: median error %.1f %%, %.0f %% within 10 %%",
        name,
        100 * errors["median_abs_error"],
        100 * errors["within_10pct"],
    )
    return {
        "model": name,
        "input_shape": list(shape),
        "num_classes": classes,
        "plans": len(plans),
        **errors,
        "build_s": round(build_s, 1),
        "table_s": round(table_s, 1),
        "calibration_s": round(build_s - table_s, 1),
        "shapes_measured": table.shape_count,
        "calibration_plans": len(cal_plans),
        "calibration": {
            "scale": fitted.calibration.scale,
            "per_mb": fitted.calibration.per_mb,
            "offset_ms": fitted.calibration.offset_ms,
        },
        "raw": _errors(raw, measured),
        "depth": depth,
        "unpruned_ms": cal_measured[0],
        "measured_ms": {"min": min(measured), "median": statistics.median(measured)},
        "predict_us": round(predict_us, 1),
        "untimed_ops": table.untimed,
        "channel_block": table.block,
        "interference_cores": interference.cores(),
        "load_before": load_before,
        "load_after": _load(),
        "points": [
            {"predicted_ms": p, "raw_ms": r, "measured_ms": m}
            for p, r, m in zip(predicted, raw, measured, strict=True)
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    """Return the markdown summary of a report."""
    m, s = report["machine"], report["settings"]
    lib = m["libraries"]
    lines = [
        "# Layer latency table: predicted against measured latency of pruned models",
        "",
        f"onnxruntime CPU, 1 thread, batch 1, optimization `all`; random init. Each table "
        f"times every distinct layer shape alone ({s['table_warmup']} warm-up and "
        f"{s['table_repeats']} timed runs, lowest median of {s['table_rounds']} passes), "
        f"then is calibrated on {s['calibration']} plans measured end to end "
        f"(`calibration_plans`, the unpruned model first). It then predicts {s['plans']} "
        "random plans per model (each group's width uniform among its allowed widths; no "
        "calibration plan among them), each pruned (`apply_plan`, l1), exported and "
        f"measured with `measure_onnx_latency` ({s['warmup']} warm-up, {s['repeats']} timed "
        f"runs, lowest median of {s['rounds']} passes over all the plans). *error* is "
        "|predicted / measured - 1|; *raw* is the uncalibrated kernel sum; *build s* times "
        "the layer shapes plus the calibration plans. Written by "
        f"`benchmarks/latency_table.py` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"torch {lib['torch']}, onnxruntime {lib['onnxruntime']}. *busy elsewhere* is the "
        "CPU, in cores, other processes took while the model was benchmarked (0: quiet); "
        "the load average counts this benchmark itself (about 1).",
        "",
        "| model | input | plans | shapes measured | build s (table + calibration) | median "
        "error | p90 error | max error | within ±10 % | raw median error | predict µs | "
        "busy elsewhere (cores) | load before / after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        c, h, w = r["input_shape"]
        lines.append(
            f"| {r['model']} | {c}x{h}x{w}, {r['num_classes']} classes | {r['plans']} | "
            f"{r['shapes_measured']} | {r['build_s']:.1f} ({r['table_s']:.1f} + "
            f"{r['calibration_s']:.1f}) | {r['median_abs_error']:.1%} | "
            f"{r['p90_abs_error']:.1%} | {r['max_abs_error']:.1%} | "
            f"{r['within_10pct']:.0%} | {r['raw']['median_abs_error']:.1%} | "
            f"{r['predict_us']:.0f} | {r['interference_cores']:.2f} | "
            f"{r['load_before']} / {r['load_after']} |"
        )
    deep = [r for r in report["rows"] if r.get("depth")]
    if deep:
        lines += [
            "",
            "Plans that also remove residual blocks (each removable block gone with a "
            "probability drawn per plan; the same calibration, which saw no such plan):",
            "",
            "| model | plans | blocks removed (mean of) | median error | p90 error | "
            "max error | within ±10 % |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in deep:
            d = r["depth"]
            lines.append(
                f"| {r['model']} | {d['plans']} | {d['blocks_removed_mean']:.1f} of "
                f"{d['removable_blocks']} | {d['median_abs_error']:.1%} | "
                f"{d['p90_abs_error']:.1%} | {d['max_abs_error']:.1%} | "
                f"{d['within_10pct']:.0%} |"
            )
    lines += ["", "Calibration (`latency ≈ scale × kernels + per_mb × weight MiB + offset`):", ""]
    for r in report["rows"]:
        c = r["calibration"]
        lines.append(
            f"- {r['model']}: scale {c['scale']:.3f}, {c['per_mb']:.4f} ms/MiB, offset "
            f"{c['offset_ms']:.3f} ms; unpruned {r['unpruned_ms']:.2f} ms, plans "
            f"{r['measured_ms']['min']:.2f}-{r['measured_ms']['median']:.2f} ms (min-median)."
        )
    lines += [
        "",
        "What the table models: the kernels onnxruntime runs at optimization `all` on the "
        f"NCHWc layout (block {report['rows'][0]['channel_block'] if report['rows'] else '?'} "
        "here): convolutions with channels padded to the block, their fused activation "
        "and residual add, depthwise and dense alike; SiLU (QuickGelu), ReLU and adds on "
        "blocked tensors; poolings, blocked only when their channels are a multiple of the "
        "block; the squeeze-excite scale and everything else on plain tensors; and every "
        "ReorderInput / ReorderOutput between the two layouts, replayed per plan (a group "
        "off the block can switch a whole residual stream to the plain layout). Each "
        "kernel is timed alone on a grid of channel counts and interpolated. Alone, a "
        "kernel finds its weights and input in cache; inside the network they come from "
        "L3 or memory: a kernel with a 1x1 output (the classifier, squeeze-excite "
        "convolutions) is held to the time a 256 MiB linear layer takes per MiB, and the "
        "calibration's per-MiB term and scale absorb the rest. Not timed (their cost "
        "would land in the offset; none occurs in these models): channel concatenations, "
        "batch norms onnxruntime cannot fold, and functions other than ReLU, sigmoid, "
        "tanh, clip, hard-sigmoid, hard-swish, leaky ReLU and SiLU.",
        "",
        "| target | result |",
        "|---|:-:|",
    ]
    for r in report["rows"]:
        ok = r["within_10pct"] >= WITHIN_TARGET
        lines.append(
            f"| {r['model']}: ≥ {WITHIN_TARGET:.0%} of plans within ±10 % | "
            f"{'pass' if ok else 'FAIL'} ({r['within_10pct']:.0%}) |"
        )
        fast = r["build_s"] <= BUILD_TARGET_S
        lines.append(
            f"| {r['model']}: built in under {BUILD_TARGET_S:.0f} s | "
            f"{'pass' if fast else 'FAIL'} ({r['build_s']:.0f} s) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Benchmark the chosen models; write ``latency_table.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--plans", type=int, default=50, help="random plans per model")
    parser.add_argument(
        "--depth-plans",
        type=int,
        default=20,
        help="random plans that also remove residual blocks, per model that has some",
    )
    parser.add_argument("--calibration", type=int, default=6, help="calibration plans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs per plan")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per plan")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the plans")
    parser.add_argument("--table-warmup", type=int, default=5)
    parser.add_argument("--table-repeats", type=int, default=25)
    parser.add_argument("--table-rounds", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    rows = [benchmark_model(name, args) for name in args.models]
    settings = {k: v for k, v in vars(args).items() if k not in ("models", "out_dir")}
    report = {"settings": settings, "rows": rows, "machine": machine()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latency_table.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out_dir / "latency_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
