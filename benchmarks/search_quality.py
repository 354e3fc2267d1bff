"""Does the search choose better channel plans than one-shot baselines at equal compute?

For each seed an unpruned baseline is trained with the real CLI (``inferprune train``,
cached outside git by its tensors: ``_quality_baselines``), then pruned to each MACs
budget (``budget.flops``) by every method asked for, all trained the same way:

* searches (``tpe``, ``gp``, ``random``; ablations ``tpe_widths``, ``tpe_plain``): the
  product's own path, ``load_problem`` → ``open_study`` → ``run_search`` →
  ``select_delivered``. With ``--compute-epochs`` the search spends that budget in rungs
  as a job does (warm starts, successive halving, the winner trained on from its
  checkpoint); without it, ``--trials`` trials of ``--epochs-per-trial`` each;
* one-shot plans, handed the whole compute as one fine-tune (``search.final.finalize``):
  ``uniform`` (Torch-Pruning's ``pruning_ratio``), ``global`` (Torch-Pruning's global
  magnitude pruning, its ratio bisected to the budget), ``sensitivity`` (the product's
  scan-allocated plan), ``depth`` (the half-depth reference), ``fastnas`` (NVIDIA
  ModelOpt FastNAS, the ``bench`` extra), and the ablation ``uniform_distilled``;
* ``unpruned``: the baseline trained on with the same compute (the goal's yardstick).

Every run records test and val accuracy, fvcore MACs, params, onnxruntime latency and
its trials. ``_quality_analysis`` pairs the seeds and merges reports (``--combine``),
``_quality_report`` writes NAME.json and NAME.md to ``--out-dir`` and
``search_quality_summary.json``. Run from the repository root::

    .venv/bin/python benchmarks/search_quality.py --quick      # a few-minute smoke run
    .venv/bin/python benchmarks/search_quality.py --budgets 0.25 --seeds 0 --methods tpe uniform
    .venv/bin/python benchmarks/search_quality.py --combine a.json b.json --name merged

The resnet56 / Fashion-MNIST runs that issue 11's goal names are in README.md."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from _machine import Interference, machine
from _quality_analysis import combine, proxy_correlations, summarize
from _quality_baselines import baseline_of, same_baseline, subset_of
from _quality_report import write_report
from _quality_settings import (
    ARCH,
    DATASET,
    DEFAULT_METHODS,
    DISTILL_TEMPERATURE,
    DISTILL_WEIGHT,
    EQUAL_COMPUTE,
    INPUT_SHAPE,
    METHODS,
    ONE_SHOT_METHODS,
    PRUNER,
    SAMPLERS,
    SEARCH_METHODS,
    WIDTHS_ONLY,
    YARDSTICK,
    Settings,
)
from _summary import update_summary

import search.fidelity
from models.prune import Plan, global_magnitude_widths
from search import (
    FinalModel,
    MemoryCheckpoints,
    PruningProblem,
    allocate_by_sensitivity,
    finalize,
    global_magnitude_plan,
    job_sensitivity,
    load_problem,
    measure_baseline,
    open_study,
    planned_trials,
    run_search,
    select_delivered,
    warm_start_plans,
)
from search.fidelity import compute_spent
from search.space import SearchSpace
from search.warm_start import GLOBAL_RATIOS

logger = logging.getLogger("benchmarks.search_quality")

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
    checkpoint: bytes | None = None
    """With ``compute_epochs``: the chosen candidate's last rung, trained on by finalize."""
    spent_epochs: float = 0.0


class ScanFile:
    """A sensitivity scan kept in a JSON file beside its baseline (the service keeps it
    in its store, per weights hash: ``search.warm_start.SensitivityCache``), so that the
    cells and methods of a run on the same baseline scan once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> dict[str, object] | None:
        """Return the stored scan, or None."""
        if not self.path.exists():
            return None
        stored: dict[str, object] = json.loads(self.path.read_text())
        return stored

    def put(self, scan: dict[str, object]) -> None:
        """Store ``scan`` unless one is stored already (written whole, then renamed)."""
        if self.path.exists():
            return
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(scan))
        os.replace(partial, self.path)


def search_choice(problem: PruningProblem, scans: ScanFile | None = None) -> Choice:
    """Run the spec's search on an in-memory study and return the plan it delivers."""
    started = time.perf_counter()
    study = open_study(
        problem,
        optuna.storages.InMemoryStorage(),
        sensitivity=lambda: job_sensitivity(problem, scans),
    )
    checkpoints = MemoryCheckpoints()
    run_search(problem, study, trials=planned_trials(problem.spec), checkpoints=checkpoints)
    trials = study.get_trials(deepcopy=False)
    best = select_delivered(problem, trials)
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
                "rung": attrs.get("rung"),
                "rung_accuracy": attrs.get("rung_accuracy"),
                "rung_loss": attrs.get("rung_loss"),
                "epochs_trained": attrs.get("epochs_trained"),
                "warm_start_kind": attrs.get("warm_start_kind"),
            }
        )
    finished = [r["val_accuracy"] for r in records if r["val_accuracy"] is not None]
    details = {
        "trials": records,
        "fine_tuned_trials": len(finished),
        "pruned_trials": sum(r["skipped"] == "pruned" for r in records),
        "infeasible_trials": sum(r["skipped"] == "infeasible" for r in records),
        "distinct_plans": len({json.dumps(r["plan"], sort_keys=True) for r in records}),
        # a continuation carries its candidate's warm-start kind, so this holds for rungs
        "best_is_uniform_warm_start": (
            study.trials[best.trial].user_attrs.get(
                "warm_start_kind", "uniform" if best.trial == 0 else None
            )
            == "uniform"
        ),
        "best_warm_start_kind": study.trials[best.trial].user_attrs.get("warm_start_kind"),
        "trial_val_accuracy_median": statistics.median(finished) if finished else None,
        "trial_val_accuracy_max": max(finished) if finished else None,
    }
    return Choice(
        plan=Plan(best.plan),
        trial=best.trial,
        seconds=time.perf_counter() - started,
        search_val_accuracy=best.val_accuracy,
        details=details,
        checkpoint=checkpoints.load(best.trial),
        spent_epochs=compute_spent(trials),
    )


def uniform_choice(problem: PruningProblem) -> Choice:
    """Return the widest uniform plan within the budget (no search)."""
    started = time.perf_counter()
    plan = problem.space.uniform_at_budget()
    return Choice(plan=plan, trial=0, seconds=time.perf_counter() - started)


def global_choice(problem: PruningProblem) -> Choice:
    """Return Torch-Pruning's global-magnitude widths at the smallest ratio that fits
    (the product's own :func:`search.global_magnitude_plan`, a warm start of its
    compute-budgeted searches).

    Raises:
        UnreachableBudgetError: no ratio meets the budget.
    """
    started = time.perf_counter()
    plan = global_magnitude_plan(problem)
    if plan is None:
        # its narrowest model over the ratios the plan scanned: MACs are not monotone in them
        narrowest = min(
            problem.space.predict(
                global_magnitude_widths(
                    problem.model,
                    problem.graph,
                    ratio,
                    ignored_layers=problem.spec.pruning.ignored_layers,
                )
            ).macs
            for ratio in GLOBAL_RATIOS
        )
        raise UnreachableBudgetError(narrowest / problem.baseline.cost.macs)
    return Choice(plan=plan, trial=0, seconds=time.perf_counter() - started)


def sensitivity_choice(problem: PruningProblem, scans: ScanFile | None = None) -> Choice:
    """Return the budget allocated by the per-group sensitivity scan (AIMET's greedy
    selection; the product's third warm start) as a one-shot method."""
    started = time.perf_counter()
    scan = job_sensitivity(problem, scans)
    if scan is None:
        raise ValueError("the sensitivity plan needs compute_epochs and trained weights")
    plan = allocate_by_sensitivity(scan, problem.space)
    return Choice(plan=plan, trial=0, seconds=time.perf_counter() - started)


def depth_choice(problem: PruningProblem) -> Choice:
    """Return the search's half-depth reference plan (``search.warm_start``) as a
    one-shot method."""
    started = time.perf_counter()
    plans = dict(warm_start_plans(problem))
    if "depth" not in plans:
        raise ValueError("the depth plan needs removable blocks, compute_epochs and a budget")
    return Choice(plan=plans["depth"], trial=0, seconds=time.perf_counter() - started)


def fastnas_choice(problem: PruningProblem) -> Choice:
    """Return the widths NVIDIA ModelOpt's FastNAS chooses at the budget (its own search
    on BN-recalibrated validation accuracy; see ``benchmarks/_fastnas.py``)."""
    from _fastnas import fastnas_plan

    started = time.perf_counter()
    fraction = problem.spec.budget.flops
    if fraction is None:
        raise ValueError("fastnas needs a budget.flops fraction")
    plan = fastnas_plan(problem, fraction, seed=problem.spec.search.seed)
    return Choice(plan=plan, trial=0, seconds=time.perf_counter() - started)


def unpruned_choice(problem: PruningProblem) -> Choice:
    """Return the empty plan: the yardstick trains the unpruned model on, with the
    compute and recipe every method gets."""
    del problem
    return Choice(plan=Plan({}), trial=0, seconds=0.0)


def reused_choice(run: dict[str, Any], source: str) -> Choice:
    """Return a one-shot method's plan as an earlier report recorded it (same baseline
    weights, budget and seed: the choice is deterministic), with the seconds the choice
    took there: FastNAS's own search takes ~18 minutes of a resnet56 cell on a CPU."""
    return Choice(
        plan=Plan(run["plan"]),
        trial=0,
        seconds=float(run["choose_s"]),
        details={"plan_reused_from": source},
    )


def reusable_plans(
    paths: Sequence[Path], seed: int, trained: dict[str, Any]
) -> dict[tuple[str, float], tuple[dict[str, Any], str]]:
    """Return ``{(method, budget): (run, source)}``: the one-shot runs of ``seed`` in the
    reports at ``paths`` that started from the same baseline weights as ``trained``
    (:func:`same_baseline`); a later report's run replaces an earlier one's."""
    found: dict[tuple[str, float], tuple[dict[str, Any], str]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        theirs = report.get("baselines", {}).get(str(seed))
        if theirs is None or not same_baseline(theirs, {"train": trained}):
            continue
        for run in report["runs"]:
            if run["seed"] == seed and run["method"] in ONE_SHOT_METHODS and run.get("plan"):
                found[(run["method"], run["budget"])] = (run, path.name)
    return found


SCAN_USERS = ("tpe", "gp", "random", "tpe_widths", "tpe_plain", "sensitivity")
"""Methods that read the sensitivity scan (the searches for their warm start)."""

CHOOSERS: dict[str, Callable[..., Choice]] = {
    "tpe": search_choice,
    "gp": search_choice,
    "random": search_choice,
    "tpe_widths": search_choice,
    "tpe_plain": search_choice,
    "uniform": uniform_choice,
    "uniform_distilled": uniform_choice,
    "global": global_choice,
    "sensitivity": sensitivity_choice,
    "fastnas": fastnas_choice,
    "depth": depth_choice,
    YARDSTICK: unpruned_choice,
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
        "final_epochs": final.final_epochs,
        "compute_epochs_spent": round(choice.spent_epochs + final.final_epochs, 4),
        "final_from_trial": final.trial if final.continued else None,
        "choose_s": round(choice.seconds, 2),
        "finalize_s": round(final.seconds, 2),
        "wall_s": round(choice.seconds + final.seconds, 2),
        "interference_cores": interference.cores(),
        "trial": choice.trial,
        "plan": choice.plan.to_dict(),
        "depth_searched": problem.spec.searches_depth and method in SEARCH_METHODS,
        "distilled": problem.spec.distills,
        "blocks_removed": len(problem.graph.removed_blocks(choice.plan)),
        **choice.details,
    }


def run_cell(
    budget: float,
    seed: int,
    methods: Sequence[str],
    settings: Settings,
    weights: Path,
    on_run: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
    reuse: Mapping[str, tuple[dict[str, Any], str]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every method at one budget and seed; return the runs and the baseline numbers
    (``on_run(runs, baseline)`` is told the same after each method). ``reuse`` holds
    one-shot plans an earlier report chose on the same baseline, by method: those
    methods train that plan instead of choosing again (:func:`reusable_plans`)."""
    base_spec = settings.spec(budget, seed, "tpe", settings.final_epochs)
    problem = load_problem(
        base_spec, weights=weights, data_root=settings.data_root, device=settings.device
    )
    baseline = measure_baseline(problem).to_dict() | {
        "val_images": len(problem.data.val),
        "test_images": len(problem.data.test),
    }
    space = {
        "smallest_macs_ratio": problem.space.predict(problem.space.smallest()).macs
        / problem.baseline.cost.macs,
        "uniform_macs_ratio": problem.space.predict(problem.space.uniform_at_budget()).macs
        / problem.baseline.cost.macs,
    }
    # what a scan depends on besides the baseline's weights, data and seed (its file name)
    scan_name = f"{weights.stem}-scan-{settings.criterion}-r{settings.round_to}.json"
    scans = ScanFile(weights.with_name(scan_name))
    runs = []
    for method in methods:
        final_epochs = settings.final_epochs
        if method.endswith(EQUAL_COMPUTE):
            final_epochs += settings.trials * settings.epochs_per_trial
        sampler = SAMPLERS.get(method, "tpe")
        depth = False if method in WIDTHS_ONLY else None
        spec = settings.spec(budget, seed, sampler, final_epochs, depth, settings.distills(method))
        if spec.searches_depth != problem.spec.searches_depth:  # another space
            job = dataclasses.replace(
                problem,
                spec=spec,
                space=SearchSpace(
                    problem.graph,
                    problem.cost,
                    problem.budget,
                    depth=spec.searches_depth,
                    contributions=problem.space.contributions,
                ),
            )
        else:
            job = dataclasses.replace(problem, spec=spec)  # same model, data and budget
        interference = Interference()
        try:
            name = method.removesuffix(EQUAL_COMPUTE)
            if reuse and method in reuse:
                choice = reused_choice(*reuse[method])
            elif name in SCAN_USERS:
                choice = CHOOSERS[name](job, scans)
            else:
                choice = CHOOSERS[name](job)
        except UnreachableBudgetError as exc:
            logger.info("budget %.3f seed %d %-10s %s", budget, seed, method, exc)
            runs.append(
                {"method": method, "budget": budget, "seed": seed, "reachable": False}
                | {"reached_macs_ratio": exc.smallest, **space}
            )
            continue
        final = finalize(
            job,
            choice.plan,
            choice.trial,
            search_val_accuracy=choice.search_val_accuracy,
            checkpoint=choice.checkpoint,
            spent_epochs=choice.spent_epochs,
        )
        run = _result(method, budget, seed, job, choice, final, interference) | space
        runs.append(run)
        if on_run is not None:
            on_run(runs, baseline)
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


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per search")
    parser.add_argument("--arch", default=ARCH, help=f"default: {ARCH}")
    parser.add_argument(
        "--final-share",
        type=float,
        help="experiment: the share of --compute-epochs that is the delivered model's own "
        "training (search.fidelity.FINAL_SHARE, default 0.75), set in this process only",
    )
    parser.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every method distills the unpruned model in its fine-tune (with "
        "--compute-epochs, in the searches' rungs too); --no-distill: none does "
        "(default: the searches as the product does, with --compute-epochs, the others "
        "on labels only)",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=DISTILL_WEIGHT,
        help="finetune.distill_weight of every method that distills (default: the product's, "
        f"{DISTILL_WEIGHT:g})",
    )
    parser.add_argument(
        "--distill-temperature",
        type=float,
        default=DISTILL_TEMPERATURE,
        help="finetune.distill_temperature of every method that distills (default: the "
        f"product's, {DISTILL_TEMPERATURE:g})",
    )
    parser.add_argument(
        "--compute-epochs",
        type=float,
        help="equal compute: every method gets this many training epochs in all (the "
        "searches as search.compute_epochs, the one-shot methods as their fine-tune); "
        "--trials, --epochs-per-trial and --final-epochs are then not used",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help=f"of {', '.join(METHODS)} (default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--epochs-per-trial", type=float, default=0.5)
    parser.add_argument("--final-epochs", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--base-epochs", type=int, default=30, help="baseline training epochs")
    parser.add_argument(
        "--dataset", default=DATASET, help="any data set name `inferprune train` accepts"
    )
    parser.add_argument(
        "--input-shape",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=INPUT_SHAPE,
        help="C,H,W the model is built for (default: 3,32,32)",
    )
    parser.add_argument("--data-root", help="where cifar10, fashion_mnist, ... files live")
    parser.add_argument(
        "--train-subset",
        type=int,
        help="use a class-balanced subset of this many training images (and --test-subset "
        "test images), written as an .npz to --cache-dir",
    )
    parser.add_argument("--test-subset", type=int, default=2000)
    parser.add_argument(
        "--name", default="search_quality", help="report file names: NAME.json and NAME.md"
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="merge the runs of these reports (e.g. seeds run in parallel) into NAME.md "
        "and NAME.json instead of running anything",
    )
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
    parser.add_argument(
        "--device",
        default="cpu",
        help="where every method trains: cpu (default), cuda, cuda:N (inferprune's --device)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run the (seed, budget) cells in N processes at once, then combine them into "
        "NAME (each trains on --device; on a GPU several small models share it well)",
    )
    parser.add_argument(
        "--baselines-only", action="store_true", help="train (and cache) the baselines, then stop"
    )
    parser.add_argument(
        "--reuse-plans",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="train the one-shot methods' plans recorded in these earlier reports where "
        "they started from the same baseline weights, budget and seed, instead of choosing "
        "again (e.g. to rerun fastnas with --distill without its 18-minute search)",
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


def _without(argv: list[str], *flags: str) -> list[str]:
    """Return ``argv`` without ``flags`` and the values that follow each."""
    out: list[str] = []
    skipping = False
    for item in argv:
        if item in flags:
            skipping = True
            continue
        if skipping and not item.startswith("--"):
            continue
        skipping = False
        out.append(item)
    return out


def run_in_parallel(args: argparse.Namespace, argv: list[str]) -> int:
    """Run every (seed, budget) cell as its own process, ``args.jobs`` at a time, then
    combine their reports into ``args.name`` (each cell's report stays in a temporary
    folder). Baselines are trained first, one process per seed, so that no two cells
    train the same one."""
    from concurrent.futures import ThreadPoolExecutor

    base = _without(argv, "--jobs", "--seeds", "--budgets", "--name", "--out-dir")
    cells_dir = Path(tempfile.mkdtemp(prefix=f"{args.name}-cells-"))
    script = [sys.executable, str(Path(__file__).resolve())]

    def cell(seed: int, budget: float | None) -> Path | None:
        name = f"s{seed}" + (f"-b{budget}" if budget is not None else "-baseline")
        command = [*script, *base, "--seeds", str(seed), "--name", name]
        command += ["--out-dir", str(cells_dir)]
        if budget is None:
            command += ["--baselines-only"]
        else:
            command += ["--budgets", str(budget)]
        log = (cells_dir / f"{name}.log").open("w")
        logger.info("started %s (log %s)", name, log.name)
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        return cells_dir / f"{name}.json" if budget is not None else None

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda seed: cell(seed, None), args.seeds))
        cells = [(seed, budget) for seed in args.seeds for budget in args.budgets]
        reports = list(pool.map(lambda pair: cell(*pair), cells))
    merged = combine([json.loads(path.read_text()) for path in reports if path is not None])
    logger.info("wrote %s", write_report(merged, args.out_dir, args.name))
    if merged["settings"].get("compute_epochs") is not None:
        update_summary(args.out_dir / "search_quality_summary.json", merged)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and write the JSON and markdown reports."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    if args.combine:
        merged = combine([json.loads(path.read_text()) for path in args.combine])
        logger.info("wrote %s", write_report(merged, args.out_dir, args.name))
        if merged["settings"].get("compute_epochs") is not None:
            update_summary(args.out_dir / "search_quality_summary.json", merged)
        return 0
    if args.jobs > 1:
        return run_in_parallel(args, list(argv if argv is not None else sys.argv[1:]))
    torch.set_num_threads(1)
    if args.final_share is not None:
        search.fidelity.FINAL_SHARE = args.final_share
    started, interference = time.perf_counter(), Interference()
    dataset, note = args.dataset, None
    if args.train_subset:
        dataset = subset_of(args)
        note = (
            f"a class-balanced subset of `{args.dataset}`: {args.train_subset} training "
            f"images (split into train and val) and {args.test_subset} test images"
        )
    settings = Settings(
        trials=args.trials,
        epochs_per_trial=args.epochs_per_trial,
        final_epochs=args.final_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        criterion=args.criterion,
        round_to=args.round_to,
        base_epochs=args.base_epochs,
        dataset=dataset,
        input_shape=args.input_shape,
        data_root=args.data_root,
        arch=args.arch,
        compute_epochs=args.compute_epochs,
        distill=args.distill,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        device=args.device,
    )
    methods = list(args.methods)
    if args.equal_compute and args.compute_epochs is None:
        methods.append("uniform" + EQUAL_COMPUTE)
    runs: list[dict[str, Any]] = []
    baselines: dict[int, dict[str, Any]] = {}
    report = _report_builder(args, settings, methods, note, started, interference)

    def write_so_far(
        done: list[dict[str, Any]],
        seed: int,
        trained: dict[str, Any],
        cell: list[dict[str, Any]],
        measured: dict[str, Any],
    ) -> None:
        """Write the report with a cell's finished methods: an interrupted run keeps what
        it finished (a cell takes hours on a CPU)."""
        so_far = baselines | {seed: {"train": trained, "measured": measured}}
        write_report(report(done + cell, so_far), args.out_dir, args.name)

    for seed in args.seeds:
        weights, trained = baseline_of(args, seed, dataset)
        logger.info("baseline seed %d: test accuracy %.4f", seed, trained["test_accuracy"])
        if args.baselines_only:
            continue
        reusable = reusable_plans(args.reuse_plans, seed, trained)
        for budget in args.budgets:
            on_run = functools.partial(write_so_far, list(runs), seed, trained)
            reuse = {m: found for (m, b), found in reusable.items() if b == budget}
            cell, measured = run_cell(budget, seed, methods, settings, weights, on_run, reuse)
            runs += cell
            baselines.setdefault(seed, {"train": trained, "measured": measured})
    if args.baselines_only:
        return 0
    payload = report(runs, baselines)
    logger.info("wrote %s", write_report(payload, args.out_dir, args.name))
    if args.compute_epochs is not None:
        summary = update_summary(args.out_dir / "search_quality_summary.json", payload)
        logger.info("updated %s", summary)
    return 0


def _report_builder(
    args: argparse.Namespace,
    settings: Settings,
    methods: list[str],
    note: str | None,
    started: float,
    interference: Interference,
) -> Callable[[list[dict[str, Any]], dict[int, dict[str, Any]]], dict[str, Any]]:
    """Return ``report(runs, baselines)``: the JSON payload of a run's results so far."""

    def report(runs: list[dict[str, Any]], baselines: dict[int, dict[str, Any]]) -> dict[str, Any]:
        sizes = next(iter(baselines.values()))["measured"]
        split_sizes = {"val": sizes["val_images"], "test": sizes["test_images"]}
        return {
            "benchmark": "search_quality",
            "machine": machine(),
            "settings": {
                **dataclasses.asdict(settings),
                "seeds": args.seeds,
                "budgets": args.budgets,
                "final_share": search.fidelity.FINAL_SHARE,
            },
            "arch": args.arch,
            "pruner": PRUNER,
            "dataset": args.dataset,
            "dataset_note": note,
            "input_shape": args.input_shape,
            "split_sizes": split_sizes,
            "methods": methods,
            "wall_s": round(time.perf_counter() - started, 1),
            "interference_cores": interference.cores(),
            "baselines": baselines,
            "summary": summarize(runs, methods),
            "proxy_correlations": proxy_correlations(runs, split_sizes["val"]),
            "runs": runs,
        }

    return report


if __name__ == "__main__":
    raise SystemExit(main())
