"""Does the Bayesian search find better channel plans than one-shot baselines?

resnet20_cifar is trained on ``digits`` at 3x32x32 with the real CLI (``inferprune
train``, one baseline per seed, cached outside git) and pruned to keep at most 50 %,
25 % and 12.5 % of its MACs (``budget.flops``). Five ways to choose the per-group widths
are compared, all within the same budget and all trained the same way afterwards:

* ``tpe``, ``gp``, ``random``: a full search (``load_problem`` → ``open_study`` on an
  in-memory Optuna storage → ``run_search`` with N trials → ``select_best``);
* ``uniform``: ``problem.space.uniform_at_budget()``, the same kept fraction in every
  group (Torch-Pruning's usual one-shot ``pruning_ratio``), no search;
* ``global``: Torch-Pruning's ``BasePruner(global_pruning=True,
  importance=MagnitudeImportance(p=1), round_to=R)`` (R: ``--round-to``) with the
  classifier ignored, its ``pruning_ratio`` bisected until the pruned model meets the
  budget; the resulting widths are read off the pruned model as our Plan, no search.

Every chosen plan then goes through the identical path ``search.final.finalize``:
rebuild with the l1 criterion, BatchNorm recalibration, ``final_epochs`` of fine-tuning,
fvcore MACs, onnxruntime latency (batch 1, one thread) and val/test accuracy. The
one-shot methods skip the N trials; ``uniform+ec`` (off with ``--no-equal-compute``)
is ``uniform`` fine-tuned ``final_epochs + trials * epochs_per_trial`` epochs, the most
training a search spends on its trials, so it gets about a search's compute.

Writes ``search_quality.json`` (machine, settings, every run's numbers and trials) and
``search_quality.md`` (tables) to ``--out-dir``. Run from the repository root::

    .venv/bin/python benchmarks/search_quality.py              # full run, ~60 min
    .venv/bin/python benchmarks/search_quality.py --quick      # 2-minute smoke run
    .venv/bin/python benchmarks/search_quality.py --budgets 0.25 --seeds 0 --methods tpe uniform
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import torch_pruning as tp
from _machine import Interference, machine
from scipy.stats import spearmanr

from models.prune import Plan, validate_plan
from search import (
    FinalModel,
    JobSpec,
    PruningProblem,
    finalize,
    load_problem,
    measure_baseline,
    open_study,
    run_search,
    select_best,
)

logger = logging.getLogger("benchmarks.search_quality")

ARCH = "resnet20_cifar"
DATASET = "digits"
INPUT_SHAPE = (3, 32, 32)
SEARCH_METHODS = ("tpe", "gp", "random")
ONE_SHOT_METHODS = ("uniform", "global")
METHODS = SEARCH_METHODS + ONE_SHOT_METHODS
EQUAL_COMPUTE = "+ec"
"""Suffix of a one-shot method run with the search's trial training added to its final
fine-tune (``uniform+ec``)."""
RATIO_SCAN_STEP = 0.05
RATIO_SCAN_STEPS = 19
"""Ratios 0.05, 0.10, ..., 0.95 are scanned."""
RATIO_BISECTION_STEPS = 10
TEST_SPLIT_SIZE = 270
"""Test images of ``digits`` (15 % of 1,797): one image is 0.37 points of accuracy."""


@dataclass(frozen=True)
class Settings:
    """Hyperparameters shared by every method (only the width choice differs)."""

    trials: int
    epochs_per_trial: float
    final_epochs: float
    lr: float
    batch_size: int
    criterion: str
    round_to: int
    base_epochs: int

    def spec(self, budget: float, seed: int, sampler: str, final_epochs: float) -> JobSpec:
        """Return the job spec of one run."""
        return JobSpec.model_validate(
            {
                "arch": ARCH,
                "input_shape": list(INPUT_SHAPE),
                "dataset": DATASET,
                "budget": {"flops": budget},
                "objective": "constrained",
                "search": {"trials": self.trials, "sampler": sampler, "seed": seed},
                "finetune": {
                    "epochs_per_trial": self.epochs_per_trial,
                    "final_epochs": final_epochs,
                    "lr": self.lr,
                    "batch_size": self.batch_size,
                },
                "pruning": {"criterion": self.criterion, "round_to": self.round_to},
                "latency": {"backend": "onnxruntime", "threads": 1, "batch_size": 1},
            }
        )


# -- baseline ---------------------------------------------------------------------------


def ensure_baseline(seed: int, epochs: int, cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Return the trained baseline of ``seed`` and the CLI's report, training it if needed.

    The CLI (``inferprune train --json``) runs in a subprocess with one thread; the
    checkpoint and its report are cached in ``cache_dir``. The seed fixes the
    train/val/test split, so every seed has its own baseline: a model trained on one
    seed's split has seen another seed's test images.
    """
    stem = f"{ARCH}-{DATASET}-e{epochs}-s{seed}"
    weights, report = cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"
    if weights.exists() and report.exists():
        return weights, json.loads(report.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("training the baseline: seed %d, %d epochs", seed, epochs)
    command = [
        str(Path(sys.executable).with_name("inferprune")),
        "train",
        "--arch",
        ARCH,
        "--dataset",
        DATASET,
        "--input-shape",
        ",".join(map(str, INPUT_SHAPE)),
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "-o",
        str(weights),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    data["command"] = " ".join(command)
    report.write_text(json.dumps(data, indent=1))
    return weights, data


# -- width choices ----------------------------------------------------------------------


class UnreachableBudgetError(Exception):
    """A one-shot method cannot meet the budget; ``smallest`` is the lowest MACs ratio it
    reached."""

    def __init__(self, smallest: float) -> None:
        super().__init__(f"budget not reachable; smallest MACs ratio {smallest:.3f}")
        self.smallest = smallest


@dataclass(frozen=True)
class Choice:
    """A plan a method chose, with what the choice cost and recorded."""

    plan: Plan
    trial: int
    seconds: float
    search_val_accuracy: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def search_choice(problem: PruningProblem) -> Choice:
    """Run the spec's search on an in-memory study and return the plan select_best picks."""
    started = time.perf_counter()
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_search(problem, study, trials=problem.spec.search.trials)
    trials = study.get_trials(deepcopy=False)
    best = select_best(problem.spec, trials)
    if best is None:
        raise RuntimeError(f"no feasible trial for {problem.spec.search}")
    records = []
    for t in trials:
        attrs = t.user_attrs
        records.append(
            {
                "number": t.number,
                "state": t.state.name,
                "skipped": attrs.get("skipped"),
                "macs_ratio": attrs.get("macs", 0) / problem.baseline.cost.macs,
                "proxy_accuracy": attrs.get("proxy_accuracy"),
                "val_accuracy": attrs.get("val_accuracy"),
                "plan": attrs.get("plan"),
                "seconds": attrs.get("seconds"),
            }
        )
    finished = [r["val_accuracy"] for r in records if r["val_accuracy"] is not None]
    details = {
        "trials": records,
        "fine_tuned_trials": len(finished),
        "pruned_trials": sum(r["skipped"] == "pruned" for r in records),
        "infeasible_trials": sum(r["skipped"] == "infeasible" for r in records),
        "distinct_plans": len({json.dumps(r["plan"], sort_keys=True) for r in records}),
        "best_is_uniform_warm_start": best.trial == 0,
        "trial_val_accuracy_median": statistics.median(finished) if finished else None,
        "trial_val_accuracy_max": max(finished) if finished else None,
    }
    return Choice(
        plan=Plan(best.plan),
        trial=best.trial,
        seconds=time.perf_counter() - started,
        search_val_accuracy=best.val_accuracy,
        details=details,
    )


def uniform_choice(problem: PruningProblem) -> Choice:
    """Return the widest uniform plan within the budget (no search)."""
    started = time.perf_counter()
    plan = problem.space.uniform_at_budget()
    return Choice(plan=plan, trial=0, seconds=time.perf_counter() - started)


def _global_magnitude_widths(problem: PruningProblem, ratio: float) -> Plan:
    """Prune a copy with Torch-Pruning's global magnitude pruner; return its widths."""
    model = copy.deepcopy(problem.model).eval()
    modules = dict(model.named_modules())
    ignored = [problem.graph.output_layer, *problem.spec.pruning.ignored_layers]
    example = torch.randn((1, *problem.input_shape), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            global_pruning=True,
            pruning_ratio=ratio,
            round_to=problem.spec.pruning.round_to,
            ignored_layers=[modules[name] for name in ignored],
        )
        pruner.step()
    pruned = dict(model.named_modules())
    widths = {g.name: int(pruned[g.name].weight.shape[0]) for g in problem.space.groups}
    return validate_plan(widths, problem.graph)


def global_choice(problem: PruningProblem) -> Choice:
    """Return Torch-Pruning's global-magnitude widths at the smallest ratio that fits.

    The pruned MACs fall with ``pruning_ratio`` only up to a point: past it, whole groups
    drop below the global threshold and Torch-Pruning leaves such a group whole rather
    than empty, so MACs rise again. The ratio is therefore scanned upward in steps of
    :data:`RATIO_SCAN_STEP` to the first that fits, then bisected below it.

    Raises:
        UnreachableBudgetError: no ratio meets the budget.
    """
    started = time.perf_counter()
    smallest = 1.0
    low, high, best = 0.0, None, None
    for step in range(1, RATIO_SCAN_STEPS + 1):
        ratio = step * RATIO_SCAN_STEP
        plan = _global_magnitude_widths(problem, ratio)
        smallest = min(smallest, problem.space.predict(plan).macs / problem.baseline.cost.macs)
        if problem.space.fits(plan):
            high, best = ratio, plan
            break
        low = ratio
    if high is None or best is None:
        raise UnreachableBudgetError(smallest)
    for _ in range(RATIO_BISECTION_STEPS):
        mid = (low + high) / 2
        plan = _global_magnitude_widths(problem, mid)
        if problem.space.fits(plan):
            high, best = mid, plan
        else:
            low = mid
    return Choice(
        plan=best,
        trial=0,
        seconds=time.perf_counter() - started,
        details={"pruning_ratio": round(high, 5)},
    )


CHOOSERS: dict[str, Callable[[PruningProblem], Choice]] = {
    "tpe": search_choice,
    "gp": search_choice,
    "random": search_choice,
    "uniform": uniform_choice,
    "global": global_choice,
}


# -- runs -------------------------------------------------------------------------------


def _result(
    method: str,
    budget: float,
    seed: int,
    problem: PruningProblem,
    choice: Choice,
    final: FinalModel,
    interference: Interference,
) -> dict[str, Any]:
    measured = final.measured
    base = problem.baseline.cost
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "reachable": True,
        "test_accuracy": measured.test_accuracy,
        "val_accuracy": measured.val_accuracy,
        "search_val_accuracy": choice.search_val_accuracy,
        "macs": measured.cost.macs,
        "macs_ratio": measured.cost.macs / base.macs,
        "params": measured.cost.params,
        "params_ratio": measured.cost.params / base.params,
        "latency_ms": measured.latency.median_ms,
        "latency_p90_ms": measured.latency.p90_ms,
        "final_epochs": problem.spec.finetune.final_epochs,
        "choose_s": round(choice.seconds, 2),
        "finalize_s": round(final.seconds, 2),
        "wall_s": round(choice.seconds + final.seconds, 2),
        "interference_cores": interference.cores(),
        "trial": choice.trial,
        "plan": choice.plan.to_dict(),
        **choice.details,
    }


def run_cell(
    budget: float,
    seed: int,
    methods: Sequence[str],
    settings: Settings,
    weights: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every method at one budget and seed; return the runs and the baseline numbers."""
    base_spec = settings.spec(budget, seed, "tpe", settings.final_epochs)
    problem = load_problem(base_spec, weights=weights)
    baseline = measure_baseline(problem).to_dict()
    space = {
        "smallest_macs_ratio": problem.space.predict(problem.space.smallest()).macs
        / problem.baseline.cost.macs,
        "uniform_macs_ratio": problem.space.predict(problem.space.uniform_at_budget()).macs
        / problem.baseline.cost.macs,
    }
    runs = []
    for method in methods:
        final_epochs = settings.final_epochs
        if method.endswith(EQUAL_COMPUTE):
            final_epochs += settings.trials * settings.epochs_per_trial
        sampler = method if method in SEARCH_METHODS else "tpe"
        spec = settings.spec(budget, seed, sampler, final_epochs)
        job = dataclasses.replace(problem, spec=spec)  # same model, data and budget
        interference = Interference()
        try:
            choice = CHOOSERS[method.removesuffix(EQUAL_COMPUTE)](job)
        except UnreachableBudgetError as exc:
            logger.info("budget %.3f seed %d %-10s %s", budget, seed, method, exc)
            runs.append(
                {"method": method, "budget": budget, "seed": seed, "reachable": False}
                | {"reached_macs_ratio": exc.smallest, **space}
            )
            continue
        final = finalize(
            job, choice.plan, choice.trial, search_val_accuracy=choice.search_val_accuracy
        )
        run = _result(method, budget, seed, job, choice, final, interference) | space
        runs.append(run)
        logger.info(
            "budget %.3f seed %d %-10s test %.4f val %.4f MACs %.3f  %.0f s",
            budget,
            seed,
            method,
            run["test_accuracy"],
            run["val_accuracy"],
            run["macs_ratio"],
            run["wall_s"],
        )
    return runs, baseline


# -- report -----------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _paired(mine: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return test-accuracy differences to ``other`` on the same seeds: mean, std, W/L."""
    theirs = {r["seed"]: r["test_accuracy"] for r in other}
    gains = [r["test_accuracy"] - theirs[r["seed"]] for r in mine if r["seed"] in theirs]
    mean, std = _mean_std(gains)
    return {
        "mean": mean,
        "std": std,
        "wins": sum(g > 0 for g in gains),
        "losses": sum(g < 0 for g in gains),
        "pairs": len(gains),
    }


def summarize(runs: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Return one row per (budget, method): means over seeds, paired gains over uniform and
    random, or the smallest MACs ratio a method reached when the budget was out of reach."""
    rows = []
    for budget in sorted({r["budget"] for r in runs}, reverse=True):
        cell = [r for r in runs if r["budget"] == budget and r["reachable"]]
        for method in methods:
            mine = [r for r in cell if r["method"] == method]
            out = [
                r
                for r in runs
                if r["budget"] == budget and r["method"] == method and not r["reachable"]
            ]
            if out:
                rows.append(
                    {
                        "budget": budget,
                        "method": method,
                        "reachable": False,
                        "seeds": len(out),
                        "reached_macs_ratio": min(r["reached_macs_ratio"] for r in out),
                    }
                )
            if not mine:
                continue
            acc_mean, acc_std = _mean_std([r["test_accuracy"] for r in mine])
            rows.append(
                {
                    "budget": budget,
                    "method": method,
                    "reachable": True,
                    "seeds": len(mine),
                    "test_accuracy_mean": acc_mean,
                    "test_accuracy_std": acc_std,
                    "vs_uniform": _paired(mine, [r for r in cell if r["method"] == "uniform"]),
                    "vs_random": _paired(mine, [r for r in cell if r["method"] == "random"]),
                    "val_accuracy_mean": statistics.fmean(r["val_accuracy"] for r in mine),
                    "macs_ratio_mean": statistics.fmean(r["macs_ratio"] for r in mine),
                    "params_mean": statistics.fmean(r["params"] for r in mine),
                    "latency_ms_mean": statistics.fmean(r["latency_ms"] for r in mine),
                    "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
                }
            )
    return rows


def proxy_correlations(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return, per budget, how well the cheap signals of a trial predict each other.

    Pools every fine-tuned search trial of the budget: Spearman correlation of the
    BN-recalibrated accuracy (what the median pruner judges) with the val accuracy after
    the trial's fine-tune (what ``select_best`` ranks by), and the share of trials whose
    BN-recalibrated accuracy was within two val images of chance (10 %).
    """
    out = {}
    for budget in sorted({r["budget"] for r in runs}, reverse=True):
        trials = [
            t
            for r in runs
            if r["budget"] == budget and r["method"] in SEARCH_METHODS and r["reachable"]
            for t in r["trials"]
        ]
        pairs = [
            (t["proxy_accuracy"], t["val_accuracy"])
            for t in trials
            if t["proxy_accuracy"] is not None and t["val_accuracy"] is not None
        ]
        proxies = [t["proxy_accuracy"] for t in trials if t["proxy_accuracy"] is not None]
        rho = float(spearmanr(*zip(*pairs, strict=True)).statistic) if len(pairs) > 2 else None
        out[str(budget)] = {
            "pairs": len(pairs),
            "spearman_proxy_vs_val": rho,
            "proxy_at_chance_share": (
                sum(v <= 0.1 + 2 / TEST_SPLIT_SIZE for v in proxies) / len(proxies)
                if proxies
                else None
            ),
        }
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _gain(paired: dict[str, Any]) -> str:
    if not paired["pairs"]:
        return "—"
    return (
        f"{100 * paired['mean']:+.2f} ± {100 * paired['std']:.2f} "
        f"({paired['wins']}/{paired['losses']})"
    )


def _results_table(payload: dict[str, Any]) -> list[str]:
    total = len(payload["settings"]["seeds"])
    lines = [
        "| MACs budget | method | seeds | test acc % | vs uniform (pts, W/L) | vs random "
        "(pts, W/L) | val acc % | MACs ratio | params K | latency ms | wall s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["summary"]:
        if not row["reachable"]:
            lines.append(
                f"| {row['budget']:g} | {row['method']} | {row['seeds']}/{total} | budget not "
                f"reachable: smallest model {row['reached_macs_ratio']:.3f} of the MACs "
                "| | | | | | | |"
            )
            continue
        vs_uniform = "—" if row["method"] == "uniform" else _gain(row["vs_uniform"])
        vs_random = "—" if row["method"] == "random" else _gain(row["vs_random"])
        lines.append(
            f"| {row['budget']:g} | {row['method']} | {row['seeds']}/{total} | "
            f"{_pct(row['test_accuracy_mean'])} ± {_pct(row['test_accuracy_std'])} | "
            f"{vs_uniform} | {vs_random} | {_pct(row['val_accuracy_mean'])} | "
            f"{row['macs_ratio_mean']:.3f} | {row['params_mean'] / 1e3:.1f} | "
            f"{row['latency_ms_mean']:.3f} | {row['wall_s_mean']:.0f} |"
        )
    return lines


def _diagnostics_table(payload: dict[str, Any]) -> list[str]:
    lines = [
        "| MACs budget | method | smallest plan | uniform plan | picked uniform | distinct "
        "plans | pruned trials | fine-tuned trials | best − median trial val (pts) "
        "| sampling s/trial |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    searched = [r for r in payload["runs"] if r["method"] in SEARCH_METHODS and r["reachable"]]
    for budget in sorted({r["budget"] for r in searched}, reverse=True):
        for method in SEARCH_METHODS:
            mine = [r for r in searched if r["budget"] == budget and r["method"] == method]
            if not mine:
                continue
            spread = statistics.fmean(
                r["trial_val_accuracy_max"] - r["trial_val_accuracy_median"] for r in mine
            )
            sampling = statistics.median(
                t["seconds"]["sample"] for r in mine for t in r["trials"] if t["seconds"]
            )
            lines.append(
                f"| {budget:g} | {method} | {mine[0]['smallest_macs_ratio']:.3f} | "
                f"{mine[0]['uniform_macs_ratio']:.3f} | "
                f"{sum(r['best_is_uniform_warm_start'] for r in mine)}/{len(mine)} | "
                f"{statistics.fmean(r['distinct_plans'] for r in mine):.1f} | "
                f"{statistics.fmean(r['pruned_trials'] for r in mine):.1f} | "
                f"{statistics.fmean(r['fine_tuned_trials'] for r in mine):.1f} | "
                f"{100 * spread:.2f} | {sampling:.3f} |"
            )
    return lines


def markdown(payload: dict[str, Any]) -> str:
    """Return the markdown report: machine, settings, baselines, results, diagnostics."""
    s, m = payload["settings"], payload["machine"]
    lib = m["libraries"]
    extra = s["trials"] * s["epochs_per_trial"]
    lines = [
        "# Search quality: Bayesian search vs one-shot width choices",
        "",
        f"{ARCH} on `{DATASET}` ({'x'.join(map(str, INPUT_SHAPE))}). Machine: {m['cpu']}, "
        f"{m['cores']} cores, torch on 1 thread; torch {lib['torch']}, optuna {lib['optuna']}, "
        f"torch-pruning {lib['torch-pruning']}, onnxruntime {lib['onnxruntime']}; finished "
        f"{m['finished_at']}. "
        f"Total wall time {payload['wall_s'] / 60:.1f} min, while other processes took "
        f"{payload['interference_cores']:.2f} cores on average (wall times are inflated by "
        "that much sharing).",
        "",
        f"Identical for every method: lr {s['lr']} (cosine), batch {s['batch_size']}, "
        f"criterion {s['criterion']} (which channels of a group go), round_to "
        f"{s['round_to']}, final fine-tune {s['final_epochs']:g} epochs after BatchNorm "
        "recalibration (`search.final.finalize`). Only the per-group widths differ. "
        f"Searches (`tpe`, `gp`, `random`): {s['trials']} trials of {s['epochs_per_trial']:g} "
        "epochs each, objective `constrained` (`budget.flops`), warm start with the uniform "
        "plan, Optuna's median pruner on the BN-recalibrated accuracy, as the product runs "
        "them; the pick is the best val accuracy among feasible trials. One-shot methods "
        "(`uniform`, `global`) skip the trials and go straight to the final fine-tune, so "
        "they use far less compute (see wall s)"
        + (
            f"; `uniform+ec` is `uniform` with the search's trial training budget added to "
            f"its final fine-tune ({s['final_epochs']:g} + {s['trials']} × "
            f"{s['epochs_per_trial']:g} = {s['final_epochs'] + extra:g} epochs), i.e. "
            "roughly equal compute."
            if any(mm.endswith(EQUAL_COMPUTE) for mm in payload["methods"])
            else "."
        ),
        f"Seeds {', '.join(map(str, s['seeds']))}: the seed fixes the data split, and "
        "with it the baseline (one per seed), the sampler and the fine-tunes.",
        "",
        "## Baselines (`inferprune train`, unpruned)",
        "",
        "| seed | epochs | val acc % | test acc % | MACs | params | latency ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, b in sorted(payload["baselines"].items()):
        lines.append(
            f"| {seed} | {b['train']['epochs']:g} | {_pct(b['train']['val_accuracy'])} | "
            f"{_pct(b['train']['test_accuracy'])} | {b['measured']['macs'] / 1e6:.2f} M | "
            f"{b['measured']['params'] / 1e3:.1f} K | {b['measured']['latency_ms']:.3f} |"
        )
    lines += [
        "",
        "## Results (over seeds)",
        "",
        "*seeds*: seeds the row covers (a one-shot method may not reach the budget on "
        "every seed's baseline). Test accuracy: mean ± std over seeds. *vs uniform* / "
        "*vs random*: paired "
        "difference of test accuracy on the same seed, mean ± std in points, and wins/losses. "
        f"The test split has {TEST_SPLIT_SIZE} images: one image is 0.37 points. MACs "
        "(fvcore) and params of the final model; latency: onnxruntime, batch 1, one "
        "thread, median. Wall s: choosing the plan (search or bisection) plus the final "
        "fine-tune and measurements.",
        "",
        *_results_table(payload),
        "",
        "## Search diagnostics (mean over seeds)",
        "",
        "*smallest plan* / *uniform plan*: MACs ratio of the narrowest plan the space "
        "allows and of the uniform plan at the budget. *picked uniform*: searches whose "
        "pick was the warm start (the uniform plan). *distinct plans*: different plans "
        "among the trials after projection onto the budget. *best − median trial val*: "
        "spread of the fine-tuned trials' val accuracy (one val image = 0.37 points).",
        "",
        *_diagnostics_table(payload),
        "",
        "Trial signals, pooled over the searches of a budget: Spearman correlation of the "
        "BN-recalibrated accuracy (the median pruner's input) with the val accuracy after "
        "the trial fine-tune (the ranking `select_best` uses), and how many trials were "
        "at chance (≤ 10.7 %) after BN recalibration alone.",
        "",
        "| MACs budget | fine-tuned trials | Spearman proxy vs val | proxy at chance |",
        "|---:|---:|---:|---:|",
    ]
    for budget, c in payload["proxy_correlations"].items():
        rho = "—" if c["spearman_proxy_vs_val"] is None else f"{c['spearman_proxy_vs_val']:.2f}"
        share = "—" if c["proxy_at_chance_share"] is None else f"{c['proxy_at_chance_share']:.0%}"
        lines.append(f"| {float(budget):g} | {c['pairs']} | {rho} | {share} |")
    lines.append("")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=", ".join(METHODS))
    parser.add_argument("--epochs-per-trial", type=float, default=0.5)
    parser.add_argument("--final-epochs", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--base-epochs", type=int, default=30, help="baseline training epochs")
    parser.add_argument(
        "--equal-compute",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run uniform with the search's trial epochs added to its final fine-tune",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inferprune-bench",
        help="where trained baselines are kept (outside git)",
    )
    parser.add_argument(
        "--out-dir", type=Path, help="default: benchmarks/results (a temp folder with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (~2 minutes)")
    args = parser.parse_args(argv)
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    if args.quick:
        args.trials, args.seeds, args.budgets = 3, [0], [0.25]
        args.epochs_per_trial, args.final_epochs, args.base_epochs = 0.1, 0.2, 1
    if args.out_dir is None:
        quick_dir = Path(tempfile.gettempdir()) / "inferprune-bench-quick"
        args.out_dir = quick_dir if args.quick else Path(__file__).parent / "results"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and write the JSON and markdown reports."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    torch.set_num_threads(1)
    started, interference = time.perf_counter(), Interference()
    settings = Settings(
        trials=args.trials,
        epochs_per_trial=args.epochs_per_trial,
        final_epochs=args.final_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        criterion=args.criterion,
        round_to=args.round_to,
        base_epochs=args.base_epochs,
    )
    methods = list(args.methods)
    if args.equal_compute:
        methods.append("uniform" + EQUAL_COMPUTE)
    runs: list[dict[str, Any]] = []
    baselines: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        weights, trained = ensure_baseline(seed, settings.base_epochs, args.cache_dir)
        logger.info("baseline seed %d: test accuracy %.4f", seed, trained["test_accuracy"])
        for budget in args.budgets:
            cell, measured = run_cell(budget, seed, methods, settings, weights)
            runs += cell
            baselines.setdefault(seed, {"train": trained, "measured": measured})
    payload = {
        "benchmark": "search_quality",
        "machine": machine(),
        "settings": {**dataclasses.asdict(settings), "seeds": args.seeds, "budgets": args.budgets},
        "arch": ARCH,
        "dataset": DATASET,
        "input_shape": INPUT_SHAPE,
        "methods": methods,
        "wall_s": round(time.perf_counter() - started, 1),
        "interference_cores": interference.cores(),
        "baselines": baselines,
        "summary": summarize(runs, methods),
        "proxy_correlations": proxy_correlations(runs),
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "search_quality.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "search_quality.md").write_text(markdown(payload))
    logger.info("wrote %s", args.out_dir / "search_quality.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
