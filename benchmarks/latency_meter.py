"""Does ``measure_latency`` tell a bigger model from a smaller one, on both backends?

A timing cannot be a test (a busy machine makes it flaky), so this is measured here:
for each backend (``LATENCY_BACKENDS``) the tiny CNN (3x16x16) and the CIFAR ResNets 20
and 56 (3x32x32), 10 classes, random init, batch 1, one thread, are timed with
``measure_latency`` (3 warm-up and 30 timed runs, as the unit tests used to), in
``--rounds`` alternating rounds (tiny, resnet20, resnet56, tiny, ...). Each model
reports the median of its round medians and the spread (p10-p90 of the runs in its
middle round); each larger model's latency ratio to the tiny CNN is given for every
round (its worst round: the smallest ratio), beside its MACs ratio. The check the test
suite once made, "resnet20 measures more than twice as slow as the tiny CNN", holds
when the worst round's ratio is above ``MARGIN``. Other processes' CPU use during the
rounds is recorded (``Interference``).

Writes ``latency_meter.json`` and ``latency_meter.md`` to ``--out-dir``. Run from the
repository root (under a minute)::

    .venv/bin/python benchmarks/latency_meter.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _machine import Interference, machine

from models.cost import LATENCY_BACKENDS, Latency, count_macs, measure_latency
from models.io import onnx_model_bytes
from models.zoo import build_model

MODELS: dict[str, tuple[int, int, int]] = {
    "tiny_cnn": (3, 16, 16),
    "resnet20_cifar": (3, 32, 32),
    "resnet56_cifar": (3, 32, 32),
}
"""Model → input shape it is timed at; the first is the reference of the ratios."""

WARMUP = 3
REPEATS = 30
MARGIN = 2.0
"""The smallest latency ratio, resnet20_cifar to tiny_cnn, the unit test once required."""


def measure(rounds: int) -> dict[str, Any]:
    """Time every model on every backend in ``rounds`` alternating rounds."""
    torch.manual_seed(0)
    models = {name: build_model(name, 10, shape).eval() for name, shape in MODELS.items()}
    onnx = {name: onnx_model_bytes(models[name], shape) for name, shape in MODELS.items()}
    interference = Interference()
    by_backend: dict[str, Any] = {}
    for backend in LATENCY_BACKENDS:
        runs: dict[str, list[Latency]] = {name: [] for name in MODELS}
        for _ in range(rounds):
            for name, shape in MODELS.items():
                runs[name].append(
                    measure_latency(
                        models[name],
                        shape,
                        backend=backend,
                        warmup=WARMUP,
                        repeats=REPEATS,
                        onnx_bytes=onnx[name] if backend == "onnxruntime" else None,
                    )
                )
        reference = next(iter(MODELS))
        rows: list[dict[str, Any]] = []
        for name, shape in MODELS.items():
            medians = [r.median_ms for r in runs[name]]
            middle = sorted(runs[name], key=lambda r: r.median_ms)[len(medians) // 2]
            ratios = [
                mine.median_ms / ref.median_ms
                for mine, ref in zip(runs[name], runs[reference], strict=True)
            ]
            rows.append(
                {
                    "model": name,
                    "input_shape": list(shape),
                    "macs": count_macs(models[name], shape),
                    "median_ms": statistics.median(medians),
                    "round_medians_ms": medians,
                    "p10_ms": middle.p10_ms,
                    "p90_ms": middle.p90_ms,
                    "ratios": ratios,
                }
            )
        ref_macs = rows[0]["macs"]
        for row in rows:
            row["macs_ratio"] = row["macs"] / ref_macs
        by_backend[backend] = rows
    return {"backends": by_backend, "interference_cores": interference.cores()}


def markdown(report: dict[str, Any]) -> str:
    """Return the markdown summary of a report."""
    m, s = report["machine"], report["settings"]
    lib = m["libraries"]
    lines = [
        "# Latency meter: bigger models measure slower",
        "",
        f"`measure_latency` on {', '.join(report['backends'])}: batch 1, 1 thread, "
        f"{s['warmup']} warm-up and {s['repeats']} timed runs per measurement, "
        f"{s['rounds']} alternating rounds over the models; random init, 10 classes. "
        "*median* is the median of the round medians, *p10-p90* the spread of the runs in "
        "the middle round, *ratio to tiny_cnn* the latency ratio in the worst round (the "
        f"smallest) and the median round. The unit test this replaces required resnet20's "
        f"ratio to exceed {s['margin']:g}. Written by `benchmarks/latency_meter.py` on "
        f"{m['date']}: {m['cpu']}, {m['cores']} cores, torch {lib['torch']}, onnxruntime "
        f"{lib['onnxruntime']}; other processes took {report['interference_cores']:.2f} "
        "cores on average while it ran.",
        "",
        "| backend | model | input | MACs (M) | MACs ratio | median ms | p10-p90 ms "
        "| ratio to tiny_cnn, worst / median round |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend, rows in report["backends"].items():
        for row in rows:
            c, h, w = row["input_shape"]
            ratios = row["ratios"]
            lines.append(
                f"| {backend} | {row['model']} | {c}x{h}x{w} | {row['macs'] / 1e6:.2f} | "
                f"{row['macs_ratio']:.1f} | {row['median_ms']:.3f} | "
                f"{row['p10_ms']:.3f}-{row['p90_ms']:.3f} | "
                f"{min(ratios):.1f} / {statistics.median(ratios):.1f} |"
            )
    lines.append("")
    for backend, rows in report["backends"].items():
        worst = min(next(r for r in rows if r["model"] == "resnet20_cifar")["ratios"])
        verdict = "holds" if worst > report["settings"]["margin"] else "does NOT hold"
        lines.append(
            f"- {backend}: resnet20_cifar / tiny_cnn is at least {worst:.1f} in every round; "
            f"the {report['settings']['margin']:g}x margin {verdict}."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write ``latency_meter.json`` and ``.md``, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {
        "settings": {
            "rounds": args.rounds,
            "warmup": WARMUP,
            "repeats": REPEATS,
            "batch_size": 1,
            "threads": 1,
            "margin": MARGIN,
        },
        **measure(args.rounds),
        "machine": machine(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latency_meter.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out_dir / "latency_meter.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
