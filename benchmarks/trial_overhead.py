"""Where the time of one search trial goes, and how much of it is not training.

A trial of the real search loop (``load_problem`` → ``open_study`` on a SQLite file →
``run_one_trial``) is split into the stages ``search.objective.run_trial`` times into
the trial's ``seconds``: sampling, projection onto the budget, applying the plan, cost
(fvcore), latency (onnxruntime), BatchNorm recalibration, fine-tune, evaluation, and
storage (``study.tell``, timed by ``run_one_trial``). Two more are measured around it:
``ask`` (``study.ask()``, until the ``on_ask`` callback) and ``unattributed``, the rest
of the wall-clock time from ask to the end of the tell that no stage claims (the trial's
constraints and user attributes are written to the storage after the last stage).

The jobs (:data:`JOBS`) are the realistic worst case for overhead, objective ``pareto``
with latency measured end to end for every candidate, the same with latency predicted by
the layer table, and the default objective (``constrained``) without latency; all within
``budget.flops`` 0.5 (so samples are projected), on a SQLite storage file opened as the
product opens it (``search.optuna_storage``), randomly initialised weights (stage times
do not depend on weight values, and with an untrained model the pareto screen skips no
fine-tune), each ``--steps-per-trial`` length of fine-tune steps of batch 64 (default
10, half an epoch of ``digits``, and 19, one epoch: the default trial, as
``finetune.epochs_per_trial`` is 1). Models: ``resnet20_cifar`` on ``digits`` at 3x32x32 and
``resnet50`` (torchvision) on ``digits`` resized to 3x64x64.

The overhead share is (wall − fine-tune − evaluation) / wall of a trial, median over
trials; the target is under 10 %. Writes ``trial_overhead.json`` and
``trial_overhead.md`` to ``--out-dir``. Run from the repository root::

    .venv/bin/python benchmarks/trial_overhead.py            # both models, both lengths, ~20 min
    .venv/bin/python benchmarks/trial_overhead.py --compute-epochs 10   # and rungs, per job
    .venv/bin/python benchmarks/trial_overhead.py --quick    # smoke run, ~2 min
    .venv/bin/python benchmarks/trial_overhead.py --models resnet50 --trials 10
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from _machine import Interference, machine
from sqlalchemy import event

from search import (
    JobSpec,
    LatencySettings,
    MemoryCheckpoints,
    TrialResult,
    load_problem,
    open_study,
    optuna_storage,
    run_one_trial,
)
from search.objective import BN_BATCHES

logger = logging.getLogger("benchmarks.trial_overhead")

MODELS: dict[str, tuple[int, int, int]] = {
    "resnet20_cifar": (3, 32, 32),
    "resnet50": (3, 64, 64),
}
"""Model → input shape it is timed at (always on ``digits``)."""

STAGES = (
    "ask",
    "sample",
    "project",
    "apply",
    "cost",
    "latency",
    "bn_recal",
    "finetune",
    "evaluate",
    "checkpoint",
    "promote",
    "storage",
    "unattributed",
)
"""``checkpoint`` (saving a rung's model) and ``promote`` (the rung decision, the compute
check and the trial attributes written after each rung) exist with ``--compute-epochs``
only."""
WORK_STAGES = frozenset({"finetune", "evaluate"})
"""Stages that are the point of a trial; everything else is overhead."""
OVERHEAD_TARGET = 0.10
BN_BATCH_SIZE = 64
"""``recalibrate_batchnorm``'s default batch size, which ``run_trial`` uses."""
LATENCY_RUNS = LatencySettings().warmup + LatencySettings().repeats


# -- measurement ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialTiming:
    """One trial's wall-clock seconds by stage (see :data:`STAGES`), and how many
    transactions it committed to the storage."""

    number: int
    wall: float
    stages: dict[str, float]
    skipped: str | None
    commits: int

    @property
    def overhead_share(self) -> float:
        """Fraction of the wall time spent outside fine-tuning and evaluation."""
        work = sum(self.stages.get(s, 0.0) for s in WORK_STAGES)
        return (self.wall - work) / self.wall


JOBS: dict[str, tuple[str, dict[str, Any]]] = {
    "latency": (
        "objective `pareto` with latency measured end to end for every candidate (onnxruntime, "
        "batch 1, 1 thread): the worst case",
        {"objective": "pareto", "latency": {"predictor": "measure"}},
    ),
    "latency-table": (
        "objective `pareto` with latency predicted by the layer table "
        "(`latency.predictor: table`, built once when the job loads)",
        {"objective": "pareto", "latency": {"predictor": "table"}},
    ),
    "constrained": (
        "objective `constrained` (the default: best accuracy within the budget), no latency",
        {"objective": "constrained"},
    ),
}
"""Job kind → (what it is, the spec fields that make it). Every job has ``budget.flops``
0.5 (so samples are projected); only the first two measure or predict latency."""


def spec_for(
    arch: str,
    trials: int,
    steps_per_trial: int,
    compute_epochs: float | None = None,
    job: str = "latency",
) -> JobSpec:
    """Return the timed job (:data:`JOBS`): half the MACs, on digits.

    ``trials`` sets the sampler's random start-up as production would (a quarter of the
    trials, at least 3), so the later trials time TPE's model-based sampling. With
    ``compute_epochs`` the trials train in rungs instead (the fidelity plan decides their
    count and lengths).
    """
    search: dict[str, Any] = {"trials": trials, "sampler": "tpe", "seed": 0}
    finetune: dict[str, Any] = {"steps_per_trial": steps_per_trial, "batch_size": 64}
    if compute_epochs is not None:
        search = {"compute_epochs": compute_epochs, "sampler": "tpe", "seed": 0}
        finetune = {"batch_size": 64}
    fields = JOBS[job][1]
    return JobSpec.model_validate(
        {
            "arch": arch,
            "input_shape": list(MODELS[arch]),
            "dataset": "digits",
            "budget": {"flops": 0.5},
            "objective": fields["objective"],
            "search": search,
            "finetune": finetune,
            "pruning": {"criterion": "l1", "round_to": 8},
            "latency": {
                "backend": "onnxruntime",
                "threads": 1,
                "batch_size": 1,
                **fields.get("latency", {}),
            },
        }
    )


def time_trials(
    arch: str,
    trials: int,
    steps_per_trial: int,
    workdir: Path,
    compute_epochs: float | None = None,
    job: str = "latency",
) -> dict[str, Any]:
    """Run ``trials`` trials of ``arch`` as ``job`` (:data:`JOBS`) on a SQLite study;
    return per-trial timings.

    With ``compute_epochs`` the trials train in rungs, saving a checkpoint after each
    (in memory: what the service adds is one blob write per rung). The job's load
    (``setup_s``) includes what is done once per job: a layer latency table's build,
    and the first trial checks the analytic cost model against fvcore
    (:attr:`search.PruningProblem.cost_is_exact`).
    """
    spec = spec_for(arch, trials, steps_per_trial, compute_epochs, job)
    started = time.perf_counter()
    problem = load_problem(spec)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = optuna_storage(f"sqlite:///{workdir / f'{arch}-{job}.db'}")
    commits = [0]
    event.listen(storage.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    study = open_study(problem, storage)
    checkpoints = MemoryCheckpoints()
    cost_is_exact = problem.cost_is_exact  # once per job: not a trial's time
    setup_s = time.perf_counter() - started
    interference = Interference()
    timings: list[TrialTiming] = []
    for _ in range(trials):
        commits_before = commits[0]
        marks: dict[str, float] = {"start": time.perf_counter()}

        def on_ask(trial: optuna.Trial, marks: dict[str, float] = marks) -> None:
            marks["asked"] = time.perf_counter()

        def on_trial(result: TrialResult, model: Any, marks: dict[str, float] = marks) -> None:
            marks["told"] = time.perf_counter()

        result = run_one_trial(
            problem, study, on_trial=on_trial, on_ask=on_ask, checkpoints=checkpoints
        )
        if result is None:
            raise RuntimeError(f"{arch}: a trial failed")
        stages = dict(result.seconds)
        stages["ask"] = marks["asked"] - marks["start"]
        wall = marks["told"] - marks["start"]
        stages["unattributed"] = max(0.0, wall - sum(stages.values()))
        timings.append(
            TrialTiming(result.number, wall, stages, result.skipped, commits[0] - commits_before)
        )
        logger.info(
            "%s trial %d: %.2f s, overhead %.1f %% (%s)",
            arch,
            result.number,
            wall,
            100 * timings[-1].overhead_share,
            ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if v >= 0.05),
        )
    rungs = problem.fidelity is not None
    full = [t for t in timings if t.skipped is None or (rungs and t.stages.get("finetune"))]
    records = [{"wall": t.wall, "stages": t.stages} for t in full]
    medians = {s: statistics.median(t.stages.get(s, 0.0) for t in full) for s in STAGES}
    wall_median = statistics.median(t.wall for t in full)
    overhead_s = wall_median - sum(medians[s] for s in WORK_STAGES)
    step_s = medians["finetune"] / steps_per_trial
    return {
        "arch": arch,
        "job": job,
        "cost_is_exact": cost_is_exact,
        "steps_per_trial": 0 if rungs else steps_per_trial,
        "compute_epochs": compute_epochs,
        "fidelity": problem.fidelity.to_dict() if problem.fidelity else None,
        "input_shape": MODELS[arch],
        "groups": len(problem.space.groups),
        "macs": problem.baseline.cost.macs,
        "params": problem.baseline.cost.params,
        "train_samples": len(problem.data.train),
        "val_samples": len(problem.data.val),
        "setup_s": round(setup_s, 2),
        "interference_cores": interference.cores(),
        "fine_tuned_trials": len(full),
        "skipped_trials": len(timings) - len(full),
        "median_s": medians,
        "median_wall_s": wall_median,
        "median_overhead_s": overhead_s,
        "median_overhead_share": statistics.median(t.overhead_share for t in full),
        "median_commits": statistics.median(t.commits for t in full),
        "finetune_step_s": step_s,
        "steps_for_target": None if rungs else steps_for_target(records, steps_per_trial),
        "trials": [
            {
                "number": t.number,
                "wall": t.wall,
                "skipped": t.skipped,
                "commits": t.commits,
                "stages": t.stages,
            }
            for t in timings
        ],
    }


def steps_for_target(trials: Sequence[dict[str, Any]], steps_per_trial: int) -> int:
    """Return the fine-tune steps per trial at which the median trial's overhead share
    would fall under the target: for each trial (``wall`` and ``stages`` seconds, a
    fine-tune of ``steps_per_trial`` steps) the least number of steps for which its
    fixed overhead and evaluation are under :data:`OVERHEAD_TARGET` of it, then the median
    over the trials (as the share itself is the median trial's)."""
    needed = []
    for t in trials:
        stages = t["stages"]
        overhead = t["wall"] - sum(stages.get(s, 0.0) for s in WORK_STAGES)
        step = stages["finetune"] / steps_per_trial
        # overhead / (overhead + evaluate + steps * step) < target, solved for steps
        needed.append((overhead / OVERHEAD_TARGET - overhead - stages.get("evaluate", 0.0)) / step)
    return math.ceil(statistics.median(needed))


def sqlite_commit_ms(path: Path, *, wal: bool, writes: int = 40) -> float:
    """Return the median milliseconds of one ``trial.set_user_attr`` on a SQLite study.

    With ``wal`` the storage is the product's (:func:`search.optuna_storage`: WAL,
    ``synchronous=NORMAL``); without it, Optuna's own ``RDBStorage`` with SQLite's
    defaults, as a plain ``sqlite:///`` URL gave before.
    """
    storage = (
        optuna_storage(f"sqlite:///{path}")
        if wal
        else optuna.storages.RDBStorage(f"sqlite:///{path}")
    )
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    durations = []
    for i in range(writes):
        started = time.perf_counter()
        trial.set_user_attr(f"attr{i}", i)
        durations.append(time.perf_counter() - started)
    study.tell(trial, 0.0)
    return statistics.median(durations) * 1e3


# -- report -----------------------------------------------------------------------------


def time_weighted_share(result: dict[str, Any]) -> float:
    """Return the overhead share of all the time the trials that trained took together
    (the share of the job's trial time that is not training or evaluation), where the
    median share is that of a typical trial."""
    rungs = result["steps_per_trial"] == 0
    trained = [
        t
        for t in result["trials"]
        if t["skipped"] is None or (rungs and t["stages"].get("finetune"))
    ]
    wall = sum(t["wall"] for t in trained)
    work = sum(t["stages"].get(s, 0.0) for t in trained for s in WORK_STAGES)
    return (wall - work) / wall


def _overhead_ranking(result: dict[str, Any]) -> str:
    stages = [s for s in STAGES if s not in WORK_STAGES]
    ranked = sorted(stages, key=lambda s: result["median_s"][s], reverse=True)[:3]
    wall = result["median_wall_s"]
    return ", ".join(f"{s} {100 * result['median_s'][s] / wall:.1f} %" for s in ranked)


def _stage_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Return the per-stage table of one trial length, one column per model."""
    lines = [
        "| stage | "
        + " | ".join(f"{r['arch']} {'x'.join(map(str, r['input_shape']))}" for r in results)
        + " |",
        "|---|" + "---:|" * len(results),
    ]
    for stage in STAGES:
        cells = []
        for r in results:
            value = r["median_s"][stage]
            cells.append(f"{value:.3f} s ({100 * value / r['median_wall_s']:.1f} %)")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += [
        "| **trial (wall)** | "
        + " | ".join(f"**{r['median_wall_s']:.2f} s**" for r in results)
        + " |",
        "| **overhead share** (not fine-tune or evaluation) | "
        + " | ".join(
            f"**{100 * r['median_overhead_share']:.1f} %** "
            f"({'pass' if r['median_overhead_share'] < OVERHEAD_TARGET else 'FAIL'})"
            for r in results
        )
        + " |",
        "| overhead share of all trial time (time-weighted) | "
        + " | ".join(
            f"{100 * time_weighted_share(r):.1f} % "
            f"({'pass' if time_weighted_share(r) < OVERHEAD_TARGET else 'FAIL'})"
            for r in results
        )
        + " |",
        "| largest overhead stages | " + " | ".join(_overhead_ranking(r) for r in results) + " |",
        "| storage commits per trial | "
        + " | ".join(f"{r['median_commits']:g}" for r in results)
        + " |",
    ]
    if all(r["steps_for_target"] is not None for r in results):
        lines.append(
            "| fine-tune steps per trial for overhead < "
            f"{100 * OVERHEAD_TARGET:.0f} % | "
            + " | ".join(
                f"{r['steps_for_target']} "
                f"({r['steps_for_target'] * 64 / r['train_samples']:.1f} epochs of digits)"
                for r in results
            )
            + " |"
        )
    return lines


def _length_title(steps: int, train_samples: int, compute: float | None = None) -> str:
    if compute is not None:
        return (
            f"Rungs: `search.compute_epochs` {compute:g} (candidates train in rungs, a "
            "checkpoint after each; medians over every trial that trained)"
        )
    epochs = steps * BN_BATCH_SIZE / train_samples
    if steps == train_samples // BN_BATCH_SIZE:
        return f"{steps} fine-tune steps per trial: one epoch of `digits`, the default trial"
    return f"{steps} fine-tune steps per trial ({epochs:.2f} epochs of `digits`)"


def markdown(payload: dict[str, Any]) -> str:
    """Return the markdown report: machine, per-stage medians, the verdict and its causes."""
    m, results = payload["machine"], payload["results"]
    lib = m["libraries"]
    sqlite_ms = payload["sqlite_commit_ms"]
    lengths = sorted({r["steps_per_trial"] for r in results})
    jobs = [job for job in JOBS if any(r["job"] == job for r in results)]
    lines = [
        "# Trial overhead: where a search trial's time goes",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch on 1 thread; torch {lib['torch']}, "
        f"optuna {lib['optuna']}, onnxruntime {lib['onnxruntime']}, sqlalchemy "
        f"{lib['sqlalchemy']}; finished {m['finished_at']}. Jobs within `budget.flops` 0.5, "
        "TPE, Optuna storage on a SQLite file opened by `search.optuna_storage` (WAL), "
        f"{' or '.join(str(n) for n in lengths if n > 0)} fine-tune steps of batch 64 per "
        f"trial{' (or rungs)' if 0 in lengths else ''}, random "
        "initial weights. Medians over the trials that were fine-tuned; shares are of the "
        "median trial's wall time. *ask* and *unattributed* are measured around "
        "`run_one_trial` (see the script's docstring); the other stages are the trial's "
        f"own `seconds`. Target: overhead under {100 * OVERHEAD_TARGET:.0f} % of a trial. "
        f"Latency is measured with {payload['latency_runs']} onnxruntime runs (warm-up "
        "included). Jobs:",
        "",
        *(f"- `{job}`: {JOBS[job][0]}." for job in jobs),
        "",
    ]
    for steps in lengths:
        for job in jobs:
            block = [r for r in results if r["steps_per_trial"] == steps and r["job"] == job]
            if not block:
                continue
            title = _length_title(steps, block[0]["train_samples"], block[0].get("compute_epochs"))
            lines += [f"## {title}; job `{job}`", ""]
            lines += _stage_table(block)
            lines.append("")
    lines += [
        "## Models",
        "",
        "| model | job | trial steps | groups | MACs | params | train / val images | trials "
        "(fine-tuned) | load + open study s | cost counted | other processes (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['arch']} | {r['job']} | {r['steps_per_trial'] or 'rungs'} | "
            f"{r['groups']} | "
            f"{r['macs'] / 1e6:.1f} M | {r['params'] / 1e6:.2f} M | "
            f"{r['train_samples']} / {r['val_samples']} | "
            f"{len(r['trials'])} ({r['fine_tuned_trials']}) | {r['setup_s']:.1f} | "
            f"{'analytic (exact)' if r['cost_is_exact'] else 'fvcore'} | "
            f"{r['interference_cores']:.2f} |"
        )
    fixed = [n for n in lengths if n > 0] or lengths  # 0: the rung runs
    shortest = [r for r in results if r["steps_per_trial"] == fixed[0] and r["job"] == jobs[0]]
    lines += [
        "",
        "## Where the overhead comes from",
        "",
        f"* **bn_recal** forwards {payload['bn_recalibration_images']} training images "
        "(`search.objective.BN_BATCHES` batches of 64; `bn_recal.md` shows that more "
        "batches do not change the proxy's ranking) in every trial of a classic search, "
        "whatever the fine-tune length (a rung search computes no proxy: its first rung "
        "is the signal, and a first rung spends its time training and evaluating): "
        + ", ".join(
            f"{r['median_s']['bn_recal'] / r['median_s']['finetune']:.0%} of the "
            f"{r['steps_per_trial']}-step fine-tune's time ({r['arch']})"
            for r in shortest
        )
        + ".",
        "* **latency** makes the candidate's ONNX graph (the unpruned model's graph, "
        "exported once per job, filled with the candidate's tensors: "
        "`models.io.OnnxTemplate`; the first trial pays for the export), opens an "
        "onnxruntime session, checks the graph's logits against torch's on the timed input "
        f"and runs it {payload['latency_runs']} times, in every trial "
        "of a job that measures latency (a rung's continuation carries its origin's).",
        "* **sample**, **unattributed**, **storage**, **ask** are mostly SQLite commits: "
        "one per group for the sampled widths (`suggest_int`), one per record of user "
        "attributes (`search.storage.write_user_attrs`: the candidate's measurements before "
        "it trains, each rung's results, the trial's results after the last stage), one "
        "per constraint, one for the tell. One commit costs "
        f"{sqlite_ms['wal_normal']:.1f} ms through `search.optuna_storage` (WAL, "
        f"`synchronous=NORMAL`) and {sqlite_ms['default']:.1f} ms with SQLite's defaults, "
        "as a plain `sqlite:///` URL gives Optuna (median of 40 `set_user_attr` calls).",
        "* **cost** is fvcore on the pruned model (a trace per candidate) only where the "
        "analytic cost model is not exact for the network; where it is (it matched fvcore "
        "on a few pruned plans when the job loaded: *cost counted* above), a trial takes "
        "the prediction, and the stage is a lookup. **apply** is Torch-Pruning's surgery.",
        "* **latency-table** jobs time each distinct layer shape once when the job loads "
        "(*load + open study s*); their trials look the candidate up in the table.",
        "",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--trials", type=int, default=8, help="trials per model")
    parser.add_argument(
        "--steps-per-trial",
        type=int,
        nargs="+",
        default=[10, 19],
        help="trial lengths to time (19 steps of 64 = one epoch of digits, the default trial)",
    )
    parser.add_argument(
        "--compute-epochs",
        type=float,
        help="also time a compute-budgeted search (rungs and their checkpoints) of E epochs",
    )
    parser.add_argument(
        "--jobs",
        nargs="+",
        choices=list(JOBS),
        default=list(JOBS),
        help="job kinds the rungs (--compute-epochs) are timed for; the fixed-length trials "
        "are timed for the first only",
    )
    parser.add_argument(
        "--out-dir", type=Path, help="default: benchmarks/results (a temp folder with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.steps_per_trial = 2, [2]
    if args.out_dir is None:
        quick_dir = Path(tempfile.gettempdir()) / "inferprune-bench-quick"
        args.out_dir = quick_dir if args.quick else Path(__file__).parent / "results"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Time the trials and write the JSON and markdown reports."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inferprune-overhead-") as tmp:
        results = [
            time_trials(arch, args.trials, steps, Path(tmp) / f"{steps}", job=args.jobs[0])
            for steps in args.steps_per_trial
            for arch in args.models
        ]
        if args.compute_epochs is not None:
            results += [
                time_trials(arch, args.trials, 1, Path(tmp) / "rungs", args.compute_epochs, job=job)
                for job in args.jobs
                for arch in args.models
            ]
        sqlite_ms = {
            "default": sqlite_commit_ms(Path(tmp) / "default.db", wal=False),
            "wal_normal": sqlite_commit_ms(Path(tmp) / "wal.db", wal=True),
        }
    payload = {
        "benchmark": "trial_overhead",
        "machine": machine(),
        "trials": args.trials,
        "steps_per_trial": args.steps_per_trial,
        "overhead_target": OVERHEAD_TARGET,
        "bn_recalibration_images": BN_BATCHES * BN_BATCH_SIZE,
        "latency_runs": LATENCY_RUNS,
        "sqlite_commit_ms": sqlite_ms,
        "wall_s": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "trial_overhead.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "trial_overhead.md").write_text(markdown(payload))
    logger.info("wrote %s", args.out_dir / "trial_overhead.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
