"""The markdown of part (c) of ``seed_methods.py`` (recurrent pruning), from its report.

Kept apart from the runner so that the tables can be rendered again from a saved JSON
(``render(path)``) without running anything.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["findings", "markdown", "render"]


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _pct(values: Sequence[float]) -> str:
    """Mean ± sample std of accuracies, in %."""
    if len(values) < 2:
        return f"{100 * _mean(values):.2f}"
    return f"{100 * _mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _latency(records: Sequence[dict[str, float]]) -> str:
    """Median latency (mean over seeds) with the mean p10–p90 range, in ms."""
    return (
        f"{_mean([r['median'] for r in records]):.3f} "
        f"({_mean([r['p10'] for r in records]):.3f}–{_mean([r['p90'] for r in records]):.3f})"
    )


def _runs(cell: dict[str, Any], method: str, reduction: float) -> list[tuple[dict, dict]]:
    """(baseline, run) pairs of one method at one reduction, one per seed."""
    return [
        (seed["baseline"], run)
        for seed in cell["seeds"]
        for run in seed["runs"]
        if run["method"] == method and run["reduction_target"] == reduction
    ]


def _kept(run: dict[str, Any]) -> str:
    if "widths" in run:
        return " + ".join(map(str, run["widths"])) + " units"
    return f"{100 * run['sparsity']:.1f} % of ih/hh zero"


def _table(cell: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    lines = [
        "| fewer params (target) | method | kept | params K | non-zero K | fewer non-zero "
        "| dense MACs K | effective MACs K | test acc % | Δ vs unpruned (points) "
        "| latency ms, median (p10–p90) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for reduction in settings["reductions"]:
        for method in settings["methods"]:
            pairs = _runs(cell, method, reduction)
            if not pairs:
                continue
            runs = [r for _, r in pairs]
            delta = _mean([r["test_accuracy"] - b["test_accuracy"] for b, r in pairs])
            lines.append(
                f"| {100 * reduction:.0f} % | {method} | {_kept(runs[0])} "
                f"| {_mean([r['params'] for r in runs]) / 1e3:.1f} "
                f"| {_mean([r['nonzero_params'] for r in runs]) / 1e3:.1f} "
                f"| {100 * _mean([r['reduction'] for r in runs]):.1f} % "
                f"| {_mean([r['macs'] for r in runs]) / 1e3:.0f} "
                f"| {_mean([r['effective_macs'] for r in runs]) / 1e3:.0f} "
                f"| {_pct([r['test_accuracy'] for r in runs])} | {100 * delta:+.2f} "
                f"| {_latency([r['latency_ms'] for r in runs])} |"
            )
    return lines


def _latency_ratios(pairs: Sequence[tuple[dict, dict]]) -> list[float]:
    """Median latency of each run over its seed's unpruned median."""
    return [r["latency_ms"]["median"] / b["latency_ms"]["median"] for b, r in pairs]


def _best_units(cell: dict[str, Any], methods: Sequence[str], reduction: float) -> str | None:
    scored = [
        (_mean([r["test_accuracy"] for _, r in _runs(cell, m, reduction)]), m)
        for m in methods
        if m.startswith("units") and _runs(cell, m, reduction)
    ]
    return max(scored)[1] if scored else None


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}×"


def findings(report: dict[str, Any]) -> list[str]:
    """Return sentences comparing the two kinds of pruning, computed from the report.

    For every reduction: in how many cells AGP weight pruning beats the best hidden-unit
    schedule of the cell on test accuracy, and by how much (paired by seed); then the
    latency and effective MACs of each kind relative to the unpruned model, per seed.
    Empty when either kind is missing.
    """
    settings, cells = report["settings"], report["cells"]
    methods = settings["methods"]
    if "weights agp" not in methods or not any(m.startswith("units") for m in methods):
        return []
    sentences = []
    unit_time: list[float] = []
    weight_time: list[float] = []
    weight_macs: list[float] = []
    for reduction in settings["reductions"]:
        gaps, winners = [], []
        for name, cell in cells.items():
            best = _best_units(cell, methods, reduction)
            assert best is not None
            winners.append(best)
            weights, units = _runs(cell, "weights agp", reduction), _runs(cell, best, reduction)
            paired = zip(weights, units, strict=True)  # one run of each per seed, in order
            gaps.append(
                (
                    name,
                    _mean([w["test_accuracy"] - u["test_accuracy"] for (_, w), (_, u) in paired]),
                )
            )
            unit_time += _latency_ratios(units)
            weight_time += _latency_ratios(weights)
            weight_macs += [r["effective_macs"] / b["macs"] for b, r in weights]
        ahead = sum(gap > 0 for _, gap in gaps)
        common = max(set(winners), key=winners.count)
        sentences.append(
            f"At {100 * reduction:.0f} % fewer parameters, AGP weight pruning is more accurate "
            f"than the best hidden-unit schedule in {ahead} of {len(gaps)} cells (weights minus "
            "units, test-accuracy points: "
            + "; ".join(f"{name} {100 * gap:+.2f}" for name, gap in gaps)
            + f"); the best hidden-unit schedule, picked on these test figures (which flatters "
            f"hidden units), was {common} in {winners.count(common)} of {len(winners)} cells."
        )
    verdict = (
        "On real latency hidden-unit pruning wins"
        if max(unit_time) < min(weight_time)
        else "Latency does not separate the two cleanly"
    )
    sentences.append(
        f"{verdict}: the hidden-unit models run in "
        f"{_span(unit_time)} the unpruned model's median time, the masked ones in "
        f"{_span(weight_time)} (dense shapes, zeros multiplied), although their effective "
        f"MACs are {_span(weight_macs)} the unpruned dense MACs: only a runtime that skips "
        "zero weights would turn those into time."
    )
    return sentences


def markdown(report: dict[str, Any]) -> str:
    """Return the report as markdown: one table per architecture and data set."""
    s, m = report["settings"], report["machine"]
    epochs = ", ".join(
        f"{name} {d['finetune_epochs']:g} (baselines {d['base_epochs']})"
        for name, d in s["datasets"].items()
    )
    train, test = s["fashion_subset"]
    lat = s["latency"]
    lines = [
        "# Recurrent pruning: hidden units vs AGP weight pruning (LSTM, GRU)",
        "",
        "2-layer LSTM and GRU classifiers, 64 hidden units per layer (`lstm_classifier`, "
        "`gru_classifier`), reading each image row by row: `digits_seq` (8 steps × 8 "
        f"features) and a class-balanced subset of Fashion-MNIST ({train:,} training images, "
        f"split into train and val, and {test:,} test images; 28 steps × 28 features). Seeds "
        f"{', '.join(map(str, report['seeds']))}: each has its own split and its own "
        "baseline (`inferprune train`, lr 0.05). Every method starts from that baseline and "
        f"fine-tunes the same number of epochs ({epochs}; lr {s['lr']}, cosine, batch "
        f"{s['batch_size']}).",
        "",
        "Parameters count everything: recurrent weights, biases and the classifier head. "
        "*Hidden units* (`units <schedule>`) removes whole units (gate rows, the columns that "
        "read them, the head's inputs): every layer keeps the same number of units give or "
        "take one, the widest such model whose parameters fit the target, reached along a "
        f"schedule of `models.schedules` (units ranked by {s['criterion']}). *Weights* "
        "(`weights agp`) zeroes the smallest-magnitude weights of every `weight_ih`/"
        "`weight_hh` along Zhu & Gupta's cubic over the first "
        f"{s['agp_pruning_share']:.0%} of the fine-tune ({s['mask_updates']} mask updates), "
        "the sparsity chosen so that the non-zero parameters fit the target; biases and the "
        "head stay dense. `fewer non-zero` is the achieved reduction. Effective MACs are "
        "the dense MACs (fvcore) less one per zero recurrent weight per time step.",
        "",
        "Test accuracy in %, mean ± std over seeds, on each seed's test split, which "
        "nothing here trained or chose on; Δ is the mean paired difference to the unpruned "
        "baseline of the same seed. Latency: onnxruntime, batch 1, "
        f"{lat['threads']} thread, {lat['warmup']} warm-up and {lat['repeats']} timed runs, "
        "median (mean over seeds) and p10–p90, measured while this run held the machine's "
        "quiet file (other benchmarks paused). **A dense runtime multiplies the zeroed "
        "weights like any others**: masked weights lower the non-zero parameters and the "
        "effective MACs, not the latency.",
    ]
    for name, cell in report["cells"].items():
        bases = [seed["baseline"] for seed in cell["seeds"]]
        dataset = Path(cell["dataset"].removeprefix("npz:")).name
        lines += [
            "",
            f"## {name} (`{dataset}`)",
            "",
            f"Unpruned: test {_pct([b['test_accuracy'] for b in bases])} % "
            f"({_pct([b['finetuned_test_accuracy'] for b in bases])} % after the same "
            "fine-tune, unpruned), "
            f"{bases[0]['params'] / 1e3:.1f} K params, {bases[0]['macs'] / 1e3:.0f} K MACs, "
            f"{_latency([b['latency_ms'] for b in bases])} ms.",
            "",
            *_table(cell, s),
        ]
    found = findings(report)
    if found:
        lines += ["", "## What the figures show (computed from the tables)", "", " ".join(found)]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch on {m['torch_threads']} thread; "
        f"torch {m['libraries']['torch']}, onnxruntime {m['libraries']['onnxruntime']}; "
        f"finished {m['finished_at']}. Other processes took {report['interference_cores']} "
        f"cores on average during the run. Total {report['seconds']:.0f} s. Written by "
        "`benchmarks/seed_methods.py --part recurrent`.",
        "",
    ]
    return "\n".join(lines)


def render(path: Path) -> str:
    """Return the markdown of a saved ``seed_methods_recurrent.json``."""
    return markdown(json.loads(path.read_text()))
