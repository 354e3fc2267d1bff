"""How fast the pruning engine is, and whether pruning buys real latency.

For each model a uniform 50 % plan (``uniform_plan(graph, 0.5)``, criterion l1) is
applied and the script measures:

* ``graph_s``: building the prunable groups (``build_pruning_graph``), median of runs;
* ``apply_s``: applying the plan with the graph given (``apply_plan``), median of runs;
* ``analytic_setup_s``: the ``AnalyticCost`` constructor (it runs fvcore once);
* ``analytic_predict_ms``: one ``AnalyticCost.predict(plan)``, median of many calls,
  against ``fvcore_pruned_s``, fvcore (``count_macs``) on the pruned model;
* MACs (fvcore) and parameters of the original and pruned models, their ratios, and the
  relative error of the analytic prediction against fvcore's count;
* onnxruntime latency of both models (CPU, batch 1, one thread; median, p10, p90),
  timed in alternating rounds (original, pruned, original, ...); each model reports its
  round with the lowest median, since other processes only ever add time;
* ``speedup`` = original / pruned latency against ``macs_reduction`` = original /
  pruned MACs, and their quotient (1.0: latency falls exactly as fast as MACs).

It writes ``engine.json`` and ``engine.md`` (machine, table, targets passed or missed)
to ``--out-dir``; findings written by hand below the marker line at the end of
``engine.md`` are kept. Other processes and virtual machines disturb the timings: the CPU
they took while each model was measured is recorded next to its numbers.

Run from the repository root::

    .venv/bin/python benchmarks/engine.py                      # all models, ~10 min
    .venv/bin/python benchmarks/engine.py --models resnet18 resnet56_cifar --repeats 30
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import torch
from _machine import machine_info

from models.cost import AnalyticCost, Latency, count_macs, count_params, measure_latency
from models.io import onnx_model_bytes
from models.prune import apply_plan, build_pruning_graph, uniform_plan
from models.zoo import build_model

logger = logging.getLogger("benchmarks.engine")

T = TypeVar("T")

RATIO = 0.5
CRITERION = "l1"
IMAGENET = ((3, 224, 224), 1000)
MODELS: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet18": IMAGENET,
    "resnet50": IMAGENET,
    "mobilenet_v2": IMAGENET,
    "vgg16_bn": IMAGENET,
    "densenet121": IMAGENET,
    "efficientnet_b0": IMAGENET,
    "resnet56_cifar": ((3, 32, 32), 10),
}
"""Model → (input shape, classes) it is benchmarked at."""

PLAIN = frozenset({"resnet18", "resnet50", "vgg16_bn", "resnet56_cifar"})
"""Plain CNNs: dense convolutions (plus residual adds) only. The others are built from
depthwise convolutions (mobilenet_v2, efficientnet_b0, whose cost is memory-bound and
falls only linearly with width) or concatenations (densenet121), where MACs are a poor
proxy for latency, so the latency target is not held against them."""

NOTES_MARKER = "<!-- Findings below are written by hand; engine.py keeps them when it reruns. -->"

APPLY_TARGET_S = 1.5
PREDICT_TARGET_MS = 5.0
SPEEDUP_TARGET = 0.8


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model; times in seconds unless the name says ms.

    ``interference_*`` is the CPU, in cores, other work took while the engine steps
    and the latency rounds were timed (see :func:`interference`).
    """

    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    plain: bool
    groups: int
    graph_s: float
    graph_runs_s: tuple[float, ...]
    apply_s: float
    apply_runs_s: tuple[float, ...]
    analytic_setup_s: float
    analytic_predict_ms: float
    fvcore_pruned_s: float
    macs_original: int
    macs_pruned: int
    macs_analytic: int
    macs_ratio: float
    macs_analytic_rel_error: float
    params_original: int
    params_pruned: int
    params_analytic: int
    params_ratio: float
    params_analytic_rel_error: float
    latency_original_ms: dict[str, float]
    latency_pruned_ms: dict[str, float]
    latency_round_medians_ms: dict[str, list[float]]
    latency_ratio: float
    speedup: float
    macs_reduction: float
    speedup_over_macs_reduction: float
    interference_engine: float
    interference_latency: float


def _timed(fn: Callable[[], T], runs: int) -> tuple[T, list[float]]:
    """Return ``fn()``'s last result and the wall-clock seconds of each of ``runs`` calls."""
    durations: list[float] = []
    result: T | None = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        durations.append(time.perf_counter() - start)
    assert result is not None
    return result, durations


def _predict_ms(cost: AnalyticCost, plan: Any, calls: int) -> float:
    """Return the median milliseconds of one ``cost.predict(plan)`` over ``calls`` calls."""
    durations = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        cost.predict(plan)
        durations.append(time.perf_counter_ns() - start)
    return statistics.median(durations) / 1e6


@dataclass(frozen=True)
class _CpuClock:
    """Machine-wide and own CPU seconds at one moment (see :func:`interference`)."""

    wall: float
    busy: float
    stolen: float
    own: float


def _cpu_clock() -> _CpuClock:
    """Return the CPU seconds spent so far by the machine, the hypervisor and this process."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return _CpuClock(
        wall=time.monotonic(),
        busy=(user + nice + system + irq + softirq) / tick,
        stolen=steal / tick,
        own=sum(os.times()[:4]),
    )


def interference(start: _CpuClock, end: _CpuClock) -> float:
    """Return how many cores, on average, went to other work between two clocks.

    Other processes' CPU time plus the time the hypervisor gave to other virtual
    machines: 0 on a quiet machine, 1 when another job kept a whole core busy.
    """
    others = (end.busy - start.busy) - (end.own - start.own)
    stolen = end.stolen - start.stolen
    return max(0.0, others + stolen) / max(end.wall - start.wall, 1e-9)


def paired_latency(
    original: torch.nn.Module, pruned: torch.nn.Module, shape: tuple[int, int, int], args: Any
) -> tuple[Latency, Latency, dict[str, list[float]]]:
    """Time both models in alternating rounds; return each one's best round.

    Returns:
        The original's and the pruned model's round with the lowest median, and every
        round's median (ms) by model.
    """
    onnx = {
        "original": onnx_model_bytes(original, shape),
        "pruned": onnx_model_bytes(pruned, shape),
    }
    models = {"original": original, "pruned": pruned}
    rounds: dict[str, list[Latency]] = {"original": [], "pruned": []}
    for _ in range(args.rounds):
        for key, model in models.items():
            latency = measure_latency(
                model,
                shape,
                backend="onnxruntime",
                threads=1,
                batch_size=1,
                warmup=args.warmup,
                repeats=args.repeats,
                onnx_bytes=onnx[key],
            )
            rounds[key].append(latency)
    best = {key: min(runs, key=lambda r: r.median_ms) for key, runs in rounds.items()}
    medians = {key: [r.median_ms for r in runs] for key, runs in rounds.items()}
    return best["original"], best["pruned"], medians


def _rel_error(predicted: int, measured: int) -> float:
    return abs(predicted - measured) / max(measured, 1)


def benchmark_model(arch: str, args: argparse.Namespace) -> ModelResult:
    """Return the measurements of one model (see the module docstring)."""
    shape, classes = MODELS[arch]
    torch.manual_seed(0)
    model = build_model(arch, classes, shape)
    runs = args.timing_runs

    engine_start = _cpu_clock()
    graph, graph_times = _timed(lambda: build_pruning_graph(model, shape, round_to=8), runs)
    plan = uniform_plan(graph, RATIO)
    logger.info("%s: %d groups, graph %.2f s", arch, len(graph.groups), min(graph_times))

    pruned, apply_times = _timed(
        lambda: apply_plan(model, plan, CRITERION, None, input_shape=shape, graph=graph), runs
    )
    logger.info("%s: apply %s s", arch, ", ".join(f"{t:.2f}" for t in apply_times))

    cost, setup_times = _timed(lambda: AnalyticCost(model, graph), runs)
    predicted = cost.predict(plan)
    predict_ms = _predict_ms(cost, plan, args.predict_calls)
    macs_pruned, fvcore_times = _timed(lambda: count_macs(pruned, shape), runs)
    params_pruned = count_params(pruned)
    logger.info("%s: predict %.3f ms, fvcore %.2f s", arch, predict_ms, min(fvcore_times))

    latency_start = _cpu_clock()
    original_latency, pruned_latency, round_medians = paired_latency(model, pruned, shape, args)
    latency_end = _cpu_clock()
    logger.info(
        "%s: latency %.2f -> %.2f ms", arch, original_latency.median_ms, pruned_latency.median_ms
    )

    macs_original = cost.baseline.macs
    speedup = original_latency.median_ms / pruned_latency.median_ms
    macs_reduction = macs_original / macs_pruned
    return ModelResult(
        arch=arch,
        input_shape=shape,
        num_classes=classes,
        plain=arch in PLAIN,
        groups=len(graph.groups),
        graph_s=statistics.median(graph_times),
        graph_runs_s=tuple(graph_times),
        apply_s=statistics.median(apply_times),
        apply_runs_s=tuple(apply_times),
        analytic_setup_s=statistics.median(setup_times),
        analytic_predict_ms=predict_ms,
        fvcore_pruned_s=statistics.median(fvcore_times),
        macs_original=macs_original,
        macs_pruned=macs_pruned,
        macs_analytic=predicted.macs,
        macs_ratio=macs_pruned / macs_original,
        macs_analytic_rel_error=_rel_error(predicted.macs, macs_pruned),
        params_original=cost.baseline.params,
        params_pruned=params_pruned,
        params_analytic=predicted.params,
        params_ratio=params_pruned / cost.baseline.params,
        params_analytic_rel_error=_rel_error(predicted.params, params_pruned),
        latency_original_ms=original_latency.to_dict(),
        latency_pruned_ms=pruned_latency.to_dict(),
        latency_round_medians_ms=round_medians,
        latency_ratio=pruned_latency.median_ms / original_latency.median_ms,
        speedup=speedup,
        macs_reduction=macs_reduction,
        speedup_over_macs_reduction=speedup / macs_reduction,
        interference_engine=interference(engine_start, latency_start),
        interference_latency=interference(latency_start, latency_end),
    )


def machine() -> dict[str, Any]:
    """Return what the numbers were measured on (``machine_info`` plus torch's threads)."""
    info = machine_info()
    info["libraries"].update(fvcore=version("fvcore"), torchvision=version("torchvision"))
    return {**info, "torch_threads": torch.get_num_threads()}


def targets(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """Return each target with the measured value and whether it passed."""
    by_arch = {r.arch: r for r in results}
    checks: list[dict[str, Any]] = []
    if "resnet50" in by_arch:
        r = by_arch["resnet50"]
        checks.append(
            {
                "target": f"apply a plan to resnet50 in under {APPLY_TARGET_S} s",
                "value": f"{r.apply_s:.2f} s",
                "passed": r.apply_s < APPLY_TARGET_S,
            }
        )
        checks.append(
            {
                "target": f"analytic cost of a resnet50 plan in under {PREDICT_TARGET_MS} ms",
                "value": f"{r.analytic_predict_ms:.3f} ms",
                "passed": r.analytic_predict_ms < PREDICT_TARGET_MS,
            }
        )
    for r in results:
        if r.plain:
            checks.append(
                {
                    "target": f"{r.arch}: latency speed-up at least {SPEEDUP_TARGET} x the "
                    "MACs reduction",
                    "value": f"{r.speedup:.2f} / {r.macs_reduction:.2f} = "
                    f"{r.speedup_over_macs_reduction:.2f}",
                    "passed": r.speedup_over_macs_reduction >= SPEEDUP_TARGET,
                }
            )
    return checks


def _kept_notes(path: Path) -> str:
    """Return the hand-written findings at the end of an earlier ``engine.md``, if any."""
    text = path.read_text() if path.exists() else ""
    start = text.find(NOTES_MARKER)
    return text[start:] if start >= 0 else NOTES_MARKER + "\n"


def _markdown(report: dict[str, Any], results: Sequence[ModelResult]) -> str:
    m = report["machine"]
    lib = m["libraries"]
    s = report["settings"]
    lines = [
        "# Pruning engine benchmark",
        "",
        f"Uniform {RATIO:.0%} plan (`uniform_plan(graph, {RATIO})`), criterion `{CRITERION}`, "
        "channels rounded to multiples of 8. Written by `benchmarks/engine.py` on "
        f"{m['date']}: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch "
        f"{lib['torch']} ({m['torch_threads']} threads for tracing and pruning), "
        f"Torch-Pruning {lib['torch-pruning']}, fvcore {lib['fvcore']}, onnxruntime "
        f"{lib['onnxruntime']}.",
        "",
        f"Times are medians of {s['timing_runs']} runs; analytic predict is the median of "
        f"{s['predict_calls']} calls. Latency: onnxruntime CPU, batch 1, 1 thread, "
        f"{s['warmup']} warm-up runs, median (p10-p90) of {s['repeats']} timed runs; the "
        f"original and the pruned model alternate for {s['rounds']} rounds and each reports "
        "its fastest round (other processes only add time). MACs are fvcore's counts; the "
        "analytic error is |predicted - fvcore| / fvcore on the pruned model. Busy elsewhere: "
        "the CPU, in cores, that other processes and the hypervisor took while the engine "
        "steps / the latency rounds were timed (0: quiet machine; 1: one of the "
        f"{m['cores']} cores busy with other work).",
        "",
        "## Engine",
        "",
        "| model | groups | graph s | apply s | analytic setup s | predict ms | fvcore on "
        "pruned s | MACs error | params error | busy elsewhere |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.arch} | {r.groups} | {r.graph_s:.2f} | {r.apply_s:.2f} | "
            f"{r.analytic_setup_s:.2f} | {r.analytic_predict_ms:.3f} | "
            f"{r.fvcore_pruned_s:.2f} | {r.macs_analytic_rel_error:.2%} | "
            f"{r.params_analytic_rel_error:.2%} | {r.interference_engine:.2f} |"
        )
    lines += [
        "",
        "## Cost and latency",
        "",
        "| model | plain | MACs (G) | MACs ratio | params (M) | params ratio | latency ms "
        "original | latency ms pruned | latency ratio | speed-up | MACs reduction | "
        "speed-up / MACs reduction | busy elsewhere |",
        "|---|:-:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lo, lp = r.latency_original_ms, r.latency_pruned_ms
        lines.append(
            f"| {r.arch} | {'yes' if r.plain else 'no'} | {r.macs_original / 1e9:.3f} | "
            f"{r.macs_ratio:.3f} | {r.params_original / 1e6:.2f} | {r.params_ratio:.3f} | "
            f"{lo['median']:.2f} ({lo['p10']:.2f}-{lo['p90']:.2f}) | "
            f"{lp['median']:.2f} ({lp['p10']:.2f}-{lp['p90']:.2f}) | {r.latency_ratio:.3f} | "
            f"{r.speedup:.2f} | {r.macs_reduction:.2f} | "
            f"{r.speedup_over_macs_reduction:.2f} | {r.interference_latency:.2f} |"
        )
    lines += [
        "",
        "## Targets",
        "",
        "The latency target applies to the plain CNNs: "
        + ", ".join(sorted(PLAIN))
        + ". Depthwise (mobilenet_v2, efficientnet_b0) and concatenating (densenet121) "
        "networks are reported but not held to it.",
        "",
        "| target | measured | result |",
        "|---|---|:-:|",
    ]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'pass' if t['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Benchmark the chosen models and write ``engine.json`` and ``engine.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=50, help="timed latency runs")
    parser.add_argument("--warmup", type=int, default=10, help="untimed latency runs")
    parser.add_argument("--rounds", type=int, default=3, help="alternating latency rounds")
    parser.add_argument("--timing-runs", type=int, default=5, help="runs of each engine step")
    parser.add_argument("--predict-calls", type=int, default=200)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads for tracing, pruning and fvcore (default: torch's own choice)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    results = []
    for arch in args.models:
        results.append(benchmark_model(arch, args))
        gc.collect()
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "ratio": RATIO,
            "criterion": CRITERION,
            "round_to": 8,
            "latency": {"backend": "onnxruntime", "threads": 1, "batch_size": 1},
            "warmup": args.warmup,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "timing_runs": args.timing_runs,
            "predict_calls": args.predict_calls,
        },
        "models": [asdict(r) for r in results],
        "targets": targets(results),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "engine.json").write_text(json.dumps(report, indent=2) + "\n")
    md_path = args.out_dir / "engine.md"
    md_path.write_text(_markdown(report, results) + "\n" + _kept_notes(md_path))
    logger.info("wrote %s", md_path)


if __name__ == "__main__":
    main()
