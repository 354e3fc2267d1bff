"""Which torchvision classification models the pruning engine handles, and how fast.

Every torchvision classification model is tried: the ones the zoo registers and the ones
``models.zoo.UNSUPPORTED_TORCHVISION`` keeps out of it (so the list can be re-checked
after a Torch-Pruning upgrade). Each model, at input (3, S, S) with
S = max(64, the architecture's smallest input) and 10 classes:

1. is built and its prunable groups found (``build_pruning_graph``);
2. gets a random valid plan (each group a width drawn from ``allowed_widths()`` with a
   seeded ``random.Random``) applied with criterion l1 (``apply_plan``);
3. runs forward on a batch of two; the output must have shape (2, 10);
4. has every group's root layer checked in the pruned model: it must produce the
   width the plan gave the group;
5. has the analytic MACs and parameters of the plan (``AnalyticCost``) compared with
   fvcore's count of the pruned model (relative error);
6. is written as a pruned checkpoint (``checkpoint_bytes``) and loaded back
   (``load_pruned``, which rebuilds the architecture and replays the plan); the loaded
   model's outputs must equal the pruned model's (both in eval mode) within
   ``ROUND_TRIP_TOLERANCE`` of the largest output. Models the zoo keeps out skip this.

Each model runs in its own subprocess with a timeout, so a hang or running out of
memory fails that model only, and its memory goes back to the system before the next
one. The result (ok, or failed with the stage and the error) and the seconds of every
stage go to ``zoo_coverage.json``; ``zoo_coverage.md`` lists the supported models and
the unsupported ones with the reason ``UNSUPPORTED_TORCHVISION`` gives.

Run from the repository root (the whole sweep takes about an hour on two cores)::

    .venv/bin/python benchmarks/zoo_coverage.py
    .venv/bin/python benchmarks/zoo_coverage.py --models resnet18 squeezenet1_0  # update two
    .venv/bin/python benchmarks/zoo_coverage.py --markdown-only   # rewrite the .md
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import torch
import torchvision
from _machine import machine_info
from torch import nn

from models.cost import AnalyticCost, measure_cost
from models.io import CheckpointInfo, checkpoint_bytes, load_pruned
from models.prune import Plan, PruningGraph, apply_plan, build_pruning_graph, output_channels
from models.zoo import UNSUPPORTED_TORCHVISION, build_model, list_architectures

logger = logging.getLogger("benchmarks.zoo_coverage")

T = TypeVar("T")

NUM_CLASSES = 10
MIN_SIZE = 64
SEED = 0
ERROR_CHARS = 400
ROUND_TRIP_TOLERANCE = 1e-5
"""Largest output difference after the checkpoint round trip, relative to the largest output."""


class StageError(Exception):
    """A check failed at one stage of the sweep of a model."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def all_models() -> list[str]:
    """Return every torchvision classification model, registered in the zoo or not."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _zoo_entries() -> dict[str, Any]:
    return {a.name: a for a in list_architectures() if a.family == "torchvision"}


def _build(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """Return a fresh model ``name`` with 10 classes and the input shape it is tried at.

    Models the zoo keeps out are built straight from torchvision, as the zoo would.
    """
    entry = _zoo_entries().get(name)
    if entry is not None:
        size = max(MIN_SIZE, entry.min_spatial)
        shape = (3, size, size)
        return build_model(name, NUM_CLASSES, shape), shape
    model = torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)
    return model.eval(), (3, MIN_SIZE, MIN_SIZE)


def random_plan(graph: PruningGraph, seed: int) -> Plan:
    """Return a plan giving every group a width drawn from its allowed widths."""
    rng = random.Random(seed)
    return Plan({g.name: rng.choice(g.allowed_widths()) for g in graph.groups})


def _check_widths(graph: PruningGraph, pruned: nn.Module, plan: Plan) -> None:
    """Raise if the pruned model's groups do not have the plan's widths."""
    # each group's root layer, checked directly (see output_channels)
    modules = dict(pruned.named_modules())
    after = {g.name: output_channels(modules[g.name]) for g in graph.groups if g.name in modules}
    wrong = [
        f"{g.name}: {after.get(g.name, 'missing')} != {plan.width(g)}"
        for g in graph.groups
        if after.get(g.name) != plan.width(g)
    ]
    if wrong:
        raise StageError("widths", f"{len(wrong)} groups have the wrong width: {wrong[:3]}")


def round_trip(name: str, pruned: nn.Module, plan: Plan, shape: tuple[int, int, int]) -> float:
    """Checkpoint ``pruned``, load it back with ``load_pruned``; return the output difference.

    Returns:
        The largest absolute output difference over a seeded batch of two, relative to
        the largest absolute output.

    Raises:
        StageError: the outputs differ by more than ``ROUND_TRIP_TOLERANCE``.
    """
    data = checkpoint_bytes(pruned, CheckpointInfo(name, NUM_CLASSES, shape, plan))
    loaded, _ = load_pruned(data)
    del data
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        expected, got = pruned.eval()(x), loaded(x)
    if got.shape != expected.shape:
        raise StageError(
            "round_trip", f"output shape {tuple(got.shape)}, not {tuple(expected.shape)}"
        )
    error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    if error > ROUND_TRIP_TOLERANCE:
        raise StageError("round_trip", f"outputs differ by {error:.2e} of the largest output")
    return error


def sweep_one(name: str, seed: int) -> dict[str, Any]:
    """Run every check on model ``name``; return what was measured, stage by stage.

    Raises:
        StageError: a check failed; ``stage`` says which.
    """
    stages: dict[str, float] = {}
    result: dict[str, Any] = {"stages_s": stages}

    def stage(label: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        except StageError:
            raise
        except Exception as exc:  # any failure of the model or the engine is the result
            raise StageError(label, f"{type(exc).__name__}: {exc}") from exc
        finally:
            stages[label] = round(time.perf_counter() - start, 3)

    torch.manual_seed(seed)
    model, shape = stage("build", lambda: _build(name))
    result["input_shape"] = list(shape)
    graph = stage("graph", lambda: build_pruning_graph(model, shape))
    result["groups"] = len(graph.groups)
    plan = random_plan(graph, seed)
    pruned = stage(
        "apply", lambda: apply_plan(model, plan, "l1", None, input_shape=shape, graph=graph)
    )

    def forward() -> None:
        with torch.no_grad():
            out = pruned(torch.randn(2, *shape))
        if tuple(out.shape) != (2, NUM_CLASSES):
            raise StageError("forward", f"output shape {tuple(out.shape)}, not (2, 10)")

    stage("forward", forward)
    stage("widths", lambda: _check_widths(graph, pruned, plan))
    predicted = stage("analytic", lambda: AnalyticCost(model, graph).predict(plan))
    measured = stage("fvcore", lambda: measure_cost(pruned, shape))
    result.update(
        params=sum(p.numel() for p in model.parameters()),
        macs_pruned=measured.macs,
        macs_analytic=predicted.macs,
        macs_rel_error=abs(predicted.macs - measured.macs) / max(measured.macs, 1),
        params_rel_error=abs(predicted.params - measured.params) / max(measured.params, 1),
    )
    if name in _zoo_entries():  # load_pruned rebuilds from the zoo only
        result["round_trip_error"] = stage(
            "round_trip", lambda: round_trip(name, pruned, plan, shape)
        )
    else:
        result["round_trip_error"] = None
    return result


def _child(name: str, seed: int, result_path: Path) -> None:
    """Sweep one model and write its result as JSON to ``result_path``."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **sweep_one(name, seed)}
    except StageError as exc:
        logger.debug("%s failed\n%s", name, traceback.format_exc())
        result = {"status": "failed", "stage": exc.stage, "error": str(exc)[:ERROR_CHARS]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    result_path.write_text(json.dumps(result))


def run_isolated(name: str, seed: int, timeout: float) -> dict[str, Any]:
    """Sweep ``name`` in a subprocess; a timeout or a crash is a failed result."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", name, "--seed", str(seed)]
        command += ["--result", str(result_path)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {
                "status": "failed",
                "stage": "timeout",
                "error": f"no result within {timeout:.0f} s",
                "seconds": round(time.perf_counter() - start, 2),
            }
        if result_path.exists():
            result: dict[str, Any] = json.loads(result_path.read_text())
            return result
        killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
        return {
            "status": "failed",
            "stage": "crash",
            "error": f"exit code {proc.returncode}{killed}: {proc.stderr[-ERROR_CHARS:]}",
            "seconds": round(time.perf_counter() - start, 2),
        }


def machine() -> dict[str, Any]:
    """Return what the sweep ran on (``machine_info`` plus fvcore and torchvision)."""
    info = machine_info()
    info["libraries"].update(fvcore=version("fvcore"), torchvision=version("torchvision"))
    return info


def markdown(report: dict[str, Any]) -> str:
    """Return the markdown summary of a sweep report."""
    m, s = report["machine"], report["settings"]
    lib = m["libraries"]
    results = report["results"]
    ok = [r for r in results if r["status"] == "ok"]
    failed = [r for r in results if r["status"] != "ok"]
    loaded = [r for r in ok if r.get("round_trip_error") is not None]
    tried = loaded + [r for r in failed if r["stage"] == "round_trip"]
    tolerance = s.get("round_trip_tolerance", ROUND_TRIP_TOLERANCE)
    lines = [
        "# torchvision coverage",
        "",
        f"{len(ok)} of {len(results)} torchvision classification models prune correctly, "
        f"and {len(loaded)} of the {len(tried)} zoo models that got that far load back "
        "from their pruned checkpoint. "
        f"Each was built with {s['num_classes']} classes at input 3xSxS, S = max("
        f"{s['min_size']}, the smallest input it accepts), given a random valid plan "
        f"(seed {s['seed']}) pruned with l1, run forward, every group's root layer "
        "checked for the planned width, the analytic MACs and parameters compared "
        "with fvcore's count of the pruned model, and the pruned model written with "
        "`checkpoint_bytes` and loaded back with `load_pruned` (outputs equal within "
        f"{tolerance:g} of the largest output; *round trip* is the largest difference "
        "seen, relative). Written by `benchmarks/zoo_coverage.py` "
        f"on {m['date']}: {m['cpu']}, {m['cores']} cores, torch {lib['torch']}, torchvision "
        f"{lib['torchvision']}, Torch-Pruning {lib['torch-pruning']}; one subprocess per model, "
        f"timeout {s['timeout_s']:.0f} s. Seconds cover every stage, from building the "
        "model to the round trip.",
        "",
        "## Supported",
        "",
        "| model | input | groups | params (M) | seconds | MACs error | params error "
        "| round trip |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        size = r["input_shape"][1]
        trip = r.get("round_trip_error")
        lines.append(
            f"| {r['name']} | {size}x{size} | {r['groups']} | {r['params'] / 1e6:.1f} | "
            f"{r['seconds']:.1f} | {r['macs_rel_error']:.2%} | {r['params_rel_error']:.2%} | "
            f"{'not run' if trip is None else f'{trip:.1e}'} |"
        )
    unsupported = [r for r in failed if r["name"] in UNSUPPORTED_TORCHVISION]
    open_failures = [r for r in failed if r["name"] not in UNSUPPORTED_TORCHVISION]
    wrongly_listed = [r["name"] for r in ok if r["name"] in UNSUPPORTED_TORCHVISION]
    lines += [
        "",
        "## Unsupported",
        "",
        "Kept out of the zoo by `models.zoo.UNSUPPORTED_TORCHVISION`.",
        "",
        "| model | fails at | reason | error |",
        "|---|---|---|---|",
    ]
    lines += [_failure_row(r, UNSUPPORTED_TORCHVISION[r["name"]]) for r in unsupported]
    if open_failures:
        lines += [
            "",
            "## Registered but failing",
            "",
            "Still in the zoo: these failures are open bugs, not known limits.",
            "",
            "| model | fails at | error |",
            "|---|---|---|",
        ]
        lines += [_failure_row(r) for r in open_failures]
    if wrongly_listed:
        lines += ["", f"Listed as unsupported yet passed: {', '.join(wrongly_listed)}."]
    return "\n".join(lines) + "\n"


def _failure_row(result: dict[str, Any], reason: str | None = None) -> str:
    """Return the markdown table row of a failed model."""
    error = result["error"].replace("|", "\\|").replace("\n", " ")[:200]
    cells = [result["name"], result["stage"], *([reason] if reason else []), f"`{error}`"]
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    """Sweep the chosen models and write ``zoo_coverage.json`` and ``.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="default: every torchvision model")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from the existing .json"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    json_path = args.out_dir / "zoo_coverage.json"
    md_path = args.out_dir / "zoo_coverage.md"

    if args.child:
        _child(args.child, args.seed, args.result)
        return
    if args.markdown_only:
        md_path.write_text(markdown(json.loads(json_path.read_text())))
        return

    names = args.models or all_models()
    unknown = sorted(set(names) - set(all_models()))
    if unknown:
        parser.error(f"not torchvision classification models: {', '.join(unknown)}")
    results = []
    for i, name in enumerate(names, 1):
        result = {"name": name, **run_isolated(name, args.seed, args.timeout)}
        results.append(result)
        logger.info(
            "[%d/%d] %s: %s in %.1f s %s",
            i,
            len(names),
            name,
            result["status"],
            result["seconds"],
            result.get("error", ""),
        )
    report = {
        "machine": machine(),
        "settings": {
            "num_classes": NUM_CLASSES,
            "min_size": MIN_SIZE,
            "seed": args.seed,
            "criterion": "l1",
            "round_to": 8,
            "timeout_s": args.timeout,
            "round_trip_tolerance": ROUND_TRIP_TOLERANCE,
        },
        "results": results,
    }
    if args.models and json_path.exists():  # a partial rerun updates those models only
        rerun = {r["name"] for r in results}
        earlier = json.loads(json_path.read_text())["results"]
        results[:0] = [r for r in earlier if r["name"] not in rerun]
        results.sort(key=lambda r: r["name"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    logger.info("wrote %s", md_path)


if __name__ == "__main__":
    main()
