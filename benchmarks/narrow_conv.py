"""Why resnet56_cifar's latency falls less than its MACs when pruned (onnxruntime, CPU).

``engine.py`` finds that a uniform 50 % plan removes 3.95x of resnet56_cifar's MACs
but makes it only about 2-3x faster in onnxruntime. This script splits that gap by
stage with onnxruntime's own profiler and checks whether it is a batch-1 effect:

* **per stage**: each Conv's kernel time (profiled, median run), summed per residual
  stage (``layer1`` at 32x32 with 16 channels, ``layer2`` at 16x16 with 32, ``layer3``
  at 8x8 with 64), with the stage's MACs, for the original and the pruned model; the
  layout transforms (``ReorderOutput``) that onnxruntime adds are counted apart;
* **per batch size**: median latency of both models at batch 1, 4, 16 and 64;
* **per graph optimization level**: batch-1 latency with all optimizations (onnxruntime's
  default, which converts convolutions to the NCHWc layout) and with ``extended`` (the
  same fusions without the layout change): a direct test of the NCHWc explanation;
* **the torch backend** at batch 1, for comparison.

Sessions are configured as in ``models.cost.measure_latency`` (CPU provider, 1
intra-op thread, all graph optimizations). Writes ``narrow_conv.json`` and
``narrow_conv.md`` to ``--out-dir``. Run from the repository root::

    .venv/bin/python benchmarks/narrow_conv.py     # ~1 min
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from _machine import Interference, machine
from torch import nn

from models.cost import count_macs, macs_by_layer, measure_latency
from models.io import onnx_model_bytes
from models.prune import apply_plan, build_pruning_graph, uniform_plan
from models.zoo import build_model

ARCH = "resnet56_cifar"
SHAPE = (3, 32, 32)
STAGES = ("layer1", "layer2", "layer3")


LEVELS = {"all (NCHWc layout)": "all", "extended (no layout change)": "extended"}


def _session(data: bytes, profile_dir: Path | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "ort")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _stage_of(node: str) -> str:
    return next((stage for stage in STAGES if f"/{stage}/" in node), "stem and head")


def stage_macs(model: nn.Module) -> dict[str, int]:
    """Return fvcore's MACs per residual stage (the rest as "stem and head")."""
    total, by_layer = macs_by_layer(model, SHAPE)
    per_stage = {
        stage: sum(v for name, v in by_layer.items() if name.startswith(f"{stage}."))
        for stage in STAGES
    }
    return per_stage | {"stem and head": total - sum(per_stage.values())}


def stage_times(data: bytes, runs: int) -> dict[str, Any]:
    """Return per stage (and for ReorderOutput) the median kernel µs of one run, and nodes.

    onnxruntime writes a run's node events before the run's own ``model_run`` event,
    so the node times are summed per run by closing each sum at ``model_run``.
    """
    x = np.random.default_rng(0).standard_normal((1, *SHAPE), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(data, Path(tmp))
        feed = {session.get_inputs()[0].name: x}
        for _ in range(10 + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_run: list[collections.Counter[str]] = []
    nodes: list[collections.Counter[str]] = []
    current: collections.Counter[str] = collections.Counter()
    current_nodes: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            per_run.append(current)
            nodes.append(current_nodes)
            current, current_nodes = collections.Counter(), collections.Counter()
        elif event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            key = "ReorderOutput" if op == "ReorderOutput" else _stage_of(event["name"])
            current[key] += event["dur"]
            current_nodes[key] += 1
    timed = per_run[-runs:]
    keys = set().union(*timed)
    return {
        "median_us": {key: statistics.median(run[key] for run in timed) for key in keys},
        "nodes": dict(nodes[-1]),
    }


def batch_sweep(
    original: nn.Module, pruned: nn.Module, onnx: dict[str, bytes], sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """Return median latencies of both models per batch size (measure_latency settings).

    ``onnx`` holds both models' dynamic-batch exports, so no size exports them again.
    """
    rows = []
    for size in sizes:
        before, after = (
            measure_latency(
                model, SHAPE, batch_size=size, warmup=10, repeats=50, onnx_bytes=onnx[name]
            )
            for name, model in (("original", original), ("pruned", pruned))
        )
        rows.append(
            {
                "batch_size": size,
                "original_ms": before.median_ms,
                "pruned_ms": after.median_ms,
                "speed_up": before.median_ms / after.median_ms,
            }
        )
    return rows


def level_sweep(
    original: nn.Module, pruned: nn.Module, onnx: dict[str, bytes], runs: int
) -> list[dict[str, Any]]:
    """Return batch-1 median latency of both ONNX models per graph optimization level."""
    rows = []
    for label, level in LEVELS.items():
        before, after = (
            measure_latency(
                model,
                SHAPE,
                warmup=10,
                repeats=runs,
                onnx_bytes=onnx[name],
                onnx_optimization=level,
            ).median_ms
            for name, model in (("original", original), ("pruned", pruned))
        )
        rows.append(
            {"level": label, "original_ms": before, "pruned_ms": after, "speed_up": before / after}
        )
    return rows


def torch_batch1(original: nn.Module, pruned: nn.Module) -> dict[str, float]:
    """Return both models' median latency at batch 1 with the torch backend (1 thread)."""
    before = measure_latency(original, SHAPE, backend="torch", warmup=10, repeats=50)
    after = measure_latency(pruned, SHAPE, backend="torch", warmup=10, repeats=50)
    return {
        "original_ms": before.median_ms,
        "pruned_ms": after.median_ms,
        "speed_up": before.median_ms / after.median_ms,
    }


def markdown(payload: dict[str, Any]) -> str:
    """Return the report as a markdown page."""
    m = payload["machine"]
    reduction = payload["macs_reduction"]
    lines = [
        "# Narrow convolutions in onnxruntime: resnet56_cifar, uniform 50 % plan",
        "",
        f"Written by `benchmarks/narrow_conv.py` on {m['date']}: {m['cpu']}, {m['cores']} "
        f"cores, onnxruntime {m['libraries']['onnxruntime']}, 1 intra-op thread, all graph "
        f"optimizations; SIMD: {payload['simd']}. Plan `uniform_plan(graph, 0.5)`, "
        f"`round_to` 8: stage widths 16/32/64 become 8/16/32. MACs fall "
        f"{reduction:.2f}x. Kernel times are the median over {payload['runs']} profiled "
        f"runs at batch 1 (the profiler adds a little to every node). Other processes took "
        f"{payload['interference_cores']:.2f} cores on average.",
        "",
        "## Per stage, batch 1",
        "",
        "| stage | MACs original (M) | MACs pruned (M) | MACs reduction | kernel µs original "
        "| kernel µs pruned | speed-up | speed-up / MACs reduction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["stages"]:
        macs_red = row["macs_original"] / row["macs_pruned"] if row["macs_pruned"] else None
        speed = row["us_original"] / row["us_pruned"] if row["us_pruned"] else None
        lines.append(
            f"| {row['stage']} | {row['macs_original'] / 1e6:.1f} | {row['macs_pruned'] / 1e6:.1f} "
            f"| {macs_red:.2f}x | {row['us_original']:.0f} | {row['us_pruned']:.0f} | "
            f"{speed:.2f}x | {speed / macs_red:.2f} |"
            if macs_red and speed
            else f"| {row['stage']} | {row['macs_original'] / 1e6:.1f} | "
            f"{row['macs_pruned'] / 1e6:.1f} | | {row['us_original']:.0f} | "
            f"{row['us_pruned']:.0f} | | |"
        )
    reorder = payload["reorder"]
    lines += [
        f"| ReorderOutput (layout) | | | | {reorder['us_original']:.0f} "
        f"({reorder['nodes_original']} nodes) | {reorder['us_pruned']:.0f} "
        f"({reorder['nodes_pruned']} nodes) | | |",
        "",
        "## Per batch size",
        "",
        "| batch | original ms | pruned ms | speed-up | speed-up / MACs reduction |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in payload["batches"]:
        lines.append(
            f"| {row['batch_size']} | {row['original_ms']:.3f} | {row['pruned_ms']:.3f} | "
            f"{row['speed_up']:.2f}x | {row['speed_up'] / reduction:.2f} |"
        )
    lines += [
        "",
        "## Per graph optimization level, batch 1",
        "",
        "| onnxruntime optimizations | original ms | pruned ms | speed-up "
        "| speed-up / MACs reduction |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in payload["levels"]:
        lines.append(
            f"| {row['level']} | {row['original_ms']:.3f} | {row['pruned_ms']:.3f} | "
            f"{row['speed_up']:.2f}x | {row['speed_up'] / reduction:.2f} |"
        )
    t = payload["torch_batch1"]
    lines += [
        "",
        "## The torch backend, batch 1",
        "",
        "| original ms | pruned ms | speed-up | speed-up / MACs reduction |",
        "|---:|---:|---:|---:|",
        f"| {t['original_ms']:.3f} | {t['pruned_ms']:.3f} | {t['speed_up']:.2f}x | "
        f"{t['speed_up'] / reduction:.2f} |",
    ]
    return "\n".join(lines)


def _simd() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "unknown"
    if " avx512f" in flags:
        return "AVX-512 (onnxruntime's NCHWc block: 16 channels)"
    if " avx2" in flags:
        return "AVX2 (onnxruntime's NCHWc block: 8 channels)"
    return "no AVX2"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="profiled runs per model")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    interference = Interference()
    original = build_model(ARCH, num_classes=10, input_shape=SHAPE).eval()
    graph = build_pruning_graph(original, SHAPE, round_to=8)
    pruned = apply_plan(
        original, uniform_plan(graph, 0.5), "l1", None, input_shape=SHAPE, graph=graph
    )
    pruned.eval()
    macs = {"original": stage_macs(original), "pruned": stage_macs(pruned)}
    onnx = {
        name: onnx_model_bytes(model, SHAPE)
        for name, model in (("original", original), ("pruned", pruned))
    }
    times = {name: stage_times(data, args.runs) for name, data in onnx.items()}
    stages = [
        {
            "stage": stage,
            "macs_original": macs["original"][stage],
            "macs_pruned": macs["pruned"][stage],
            "us_original": times["original"]["median_us"].get(stage, 0.0),
            "us_pruned": times["pruned"]["median_us"].get(stage, 0.0),
        }
        for stage in (*STAGES, "stem and head")
    ]
    payload = {
        "machine": machine(),
        "simd": _simd(),
        "runs": args.runs,
        "macs_reduction": count_macs(original, SHAPE) / count_macs(pruned, SHAPE),
        "stages": stages,
        "reorder": {
            "us_original": times["original"]["median_us"].get("ReorderOutput", 0.0),
            "us_pruned": times["pruned"]["median_us"].get("ReorderOutput", 0.0),
            "nodes_original": times["original"]["nodes"].get("ReorderOutput", 0),
            "nodes_pruned": times["pruned"]["nodes"].get("ReorderOutput", 0),
        },
        "batches": batch_sweep(original, pruned, onnx, args.batches),
        "levels": level_sweep(original, pruned, onnx, args.runs),
        "torch_batch1": torch_batch1(original, pruned),
        "interference_cores": interference.cores(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "narrow_conv.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "narrow_conv.md").write_text(markdown(payload) + "\n")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
