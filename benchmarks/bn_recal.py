"""How many batches adaptive BatchNorm recalibration needs in a search trial.

Every trial recalibrates its candidate's BatchNorm statistics before anything else is
trained (``search.objective.BN_BATCHES`` batches of 64 training images). That accuracy
is the proxy the median pruner and the pareto screen judge a candidate by, so fewer
batches make a trial cheaper but may make the proxy a worse predictor.

For random plans at each MACs budget (sampled and projected exactly as a search trial
does) on a trained ``resnet20_cifar`` on ``digits`` (the baseline of
``search_quality.py``, trained with ``inferprune train`` and cached), this measures, for
each number of recalibration batches k:

* the seconds the recalibration takes (torch on 1 thread, like a worker);
* the validation accuracy after recalibration (the proxy) and its Spearman correlation
  with the validation accuracy after one epoch of fine-tuning (what the search ranks
  by), and with the proxy from the most batches measured;
* the validation accuracy after that fine-tune when it starts from k batches'
  statistics (``--finetune-from``), paired by plan;
* the pruner's other signal: the validation accuracy halfway through the fine-tune
  (``search.objective`` reports it as step 1), and its Spearman correlation with the
  fine-tuned accuracy, beside the proxy's.

Writes ``bn_recal.json`` and ``bn_recal.md`` to ``--out-dir``. Run from the repository
root::

    .venv/bin/python benchmarks/bn_recal.py            # ~9 min with a cached baseline
    .venv/bin/python benchmarks/bn_recal.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import torch
from _machine import Interference, machine
from _quality_baselines import ensure_baseline
from _quality_settings import ARCH, DATASET, INPUT_SHAPE
from scipy.stats import spearmanr
from torch import nn

from models.train import TrainProgress, evaluate, fine_tune, recalibrate_batchnorm
from search import JobSpec, load_problem
from search.objective import BN_BATCHES, build_candidate

logger = logging.getLogger("benchmarks.bn_recal")

BATCH_SIZE = 64
"""Images per recalibration batch, as in a search trial."""


def spec_for(budget: float, round_to: int, epochs: float) -> JobSpec:
    """Return a job spec at ``budget`` (the sampler is irrelevant: plans are random)."""
    return JobSpec.model_validate(
        {
            "arch": ARCH,
            "input_shape": list(INPUT_SHAPE),
            "dataset": DATASET,
            "budget": {"flops": budget},
            "search": {"trials": 1, "sampler": "random", "seed": 0},
            "finetune": {"epochs_per_trial": epochs, "batch_size": BATCH_SIZE},
            "pruning": {"criterion": "l1", "round_to": round_to},
        }
    )


def measure_budget(
    budget: float, plans: int, ks: Sequence[int], finetune_from: Sequence[int], args: Any
) -> list[dict[str, Any]]:
    """Return one record per random plan at ``budget``: proxies, times, fine-tuned accuracy."""
    weights, _ = ensure_baseline(0, args.base_epochs, args.cache_dir)
    problem = load_problem(spec_for(budget, args.round_to, args.epochs), weights=weights)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    records = []
    for index in range(plans):
        trial = study.ask()
        plan = problem.space.project(problem.space.suggest(trial))
        candidate = build_candidate(problem, plan)
        record: dict[str, Any] = {
            "plan": plan.to_dict(),
            "macs_ratio": problem.space.predict(plan).macs / problem.baseline.cost.macs,
            "recal_s": {},
            "proxy": {},
            "finetuned": {},
        }
        recalibrated = {}
        for k in ks:
            model = copy.deepcopy(candidate)
            started = time.perf_counter()
            recalibrate_batchnorm(
                model, problem.data.train, batches=k, batch_size=BATCH_SIZE, seed=index
            )
            record["recal_s"][k] = time.perf_counter() - started
            record["proxy"][k] = evaluate(model, problem.data.val).top1
            recalibrated[k] = model
        for k in finetune_from:
            model = recalibrated[k]
            halfway: list[float] = []

            def at_half(
                progress: TrainProgress, model: nn.Module = model, halfway: list[float] = halfway
            ) -> None:
                if progress.step == progress.total_steps // 2:
                    halfway.append(evaluate(model, problem.data.val).top1)
                    model.train()

            fine_tune(
                model,
                problem.data.train,
                epochs=args.epochs,
                lr=0.01,
                batch_size=BATCH_SIZE,
                seed=index,
                on_step=at_half,
            )
            record["finetuned"][k] = evaluate(model, problem.data.val).top1
            if k == max(finetune_from) and halfway:
                record["midway"] = halfway[0]
        logger.info(
            "budget %.3f plan %d/%d: MACs %.3f, proxy %s, fine-tuned %s",
            budget,
            index + 1,
            plans,
            record["macs_ratio"],
            {k: round(v, 3) for k, v in record["proxy"].items()},
            {k: round(v, 3) for k, v in record["finetuned"].items()},
        )
        records.append(record)
    return records


def summarize(
    records: Sequence[dict[str, Any]], ks: Sequence[int], finetune_from: Sequence[int]
) -> list[dict[str, Any]]:
    """Return one row per k: time, proxy correlations and fine-tuned accuracy."""
    reference_k = max(ks)
    target_k = max(finetune_from)
    target = [r["finetuned"][target_k] for r in records]
    reference = [r["proxy"][reference_k] for r in records]
    rows = []
    midway = [r.get("midway") for r in records]
    if all(v is not None for v in midway):
        rows.append(
            {
                "batches": "halfway",
                "spearman_vs_finetuned": float(spearmanr(midway, target).statistic),
                "midway_mean": statistics.fmean(v for v in midway if v is not None),
            }
        )
    for k in ks:
        proxies = [r["proxy"][k] for r in records]
        row: dict[str, Any] = {
            "batches": k,
            "images": k * BATCH_SIZE,
            "recal_s_median": statistics.median(r["recal_s"][k] for r in records),
            "proxy_mean": statistics.fmean(proxies),
            "spearman_vs_finetuned": float(spearmanr(proxies, target).statistic),
            "spearman_vs_reference": float(spearmanr(proxies, reference).statistic),
            "finetuned_mean": None,
            "finetuned_minus_reference": None,
        }
        if k in finetune_from:
            tuned = [r["finetuned"][k] for r in records]
            row["finetuned_mean"] = statistics.fmean(tuned)
            row["finetuned_minus_reference"] = statistics.fmean(
                a - b for a, b in zip(tuned, target, strict=True)
            )
        rows.append(row)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    """Return the report as a markdown page."""
    m = payload["machine"]
    s = payload["settings"]
    lines = [
        "# BatchNorm recalibration and the pruner's signals",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch on 1 thread; torch {m['torch']}; "
        f"finished {payload['finished']}. `{ARCH}` trained {s['base_epochs']} epochs on "
        f"`{DATASET}` (`inferprune train`), {s['plans']} random plans per MACs budget "
        f"(sampled and projected as in a trial, `round_to` {s['round_to']}), recalibration "
        f"batches of {BATCH_SIZE} training images, proxy = validation accuracy after "
        f"recalibration, fine-tune = {s['epochs']} epoch(s) of SGD from the recalibrated "
        f"model. Spearman correlations are across plans; *vs fine-tuned* is against the "
        f"fine-tuned accuracy starting from {max(s['finetune_from'])} batches, *vs "
        f"{max(s['ks'])}* against the proxy from {max(s['ks'])} batches. A search trial "
        f"forwards {s['bn_batches_in_search']} batches (`search.objective.BN_BATCHES`). "
        f"Other processes took {payload['interference_cores']:.2f} cores on average.",
        "",
    ]
    for budget, rows in payload["budgets"].items():
        lines += [
            f"## MACs budget {float(budget):.1%}",
            "",
            "| batches | images | recal s (median) | proxy mean | Spearman vs fine-tuned "
            f"| Spearman vs {max(s['ks'])} batches | fine-tuned mean | fine-tuned − from "
            f"{max(s['finetune_from'])} |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        halfway = next((r for r in rows if r["batches"] == "halfway"), None)
        rows = [r for r in rows if r["batches"] != "halfway"]
        for r in rows:
            tuned = "" if r["finetuned_mean"] is None else f"{r['finetuned_mean']:.2%}"
            diff = (
                ""
                if r["finetuned_minus_reference"] is None
                else f"{100 * r['finetuned_minus_reference']:+.2f} pt"
            )
            lines.append(
                f"| {r['batches']} | {r['images']} | {r['recal_s_median']:.3f} | "
                f"{r['proxy_mean']:.2%} | {r['spearman_vs_finetuned']:.2f} | "
                f"{r['spearman_vs_reference']:.2f} | {tuned} | {diff} |"
            )
        if halfway is not None:
            lines += [
                "",
                "Validation accuracy halfway through the fine-tune (from "
                f"{max(s['finetune_from'])} batches): mean {halfway['midway_mean']:.2%}, "
                f"Spearman vs fine-tuned {halfway['spearman_vs_finetuned']:.2f}.",
            ]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    parser.add_argument("--plans", type=int, default=20, help="random plans per budget")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--finetune-from",
        type=int,
        nargs="+",
        default=[1, 2, 8],
        help="recalibration batches the fine-tune starts from (each costs a fine-tune)",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="fine-tune epochs")
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument("--base-epochs", type=int, default=30, help="baseline training epochs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random plans")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inferprune-bench",
        help="where trained baselines are cached (shared with search_quality.py)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.plans, args.base_epochs, args.budgets = 4, 1, args.budgets[:1]
    if not set(args.finetune_from) <= set(args.ks):
        parser.error("every --finetune-from value must be one of --ks")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    ks = sorted(set(args.ks))
    finetune_from = sorted(set(args.finetune_from))
    interference = Interference()
    budgets = {}
    raw = {}
    for budget in args.budgets:
        records = measure_budget(budget, args.plans, ks, finetune_from, args)
        raw[str(budget)] = records
        budgets[str(budget)] = summarize(records, ks, finetune_from)
    payload = {
        "machine": machine() | {"torch": torch.__version__, "optuna": version("optuna")},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "plans": args.plans,
            "ks": ks,
            "finetune_from": finetune_from,
            "epochs": args.epochs,
            "round_to": args.round_to,
            "base_epochs": args.base_epochs,
            "seed": args.seed,
            "bn_batches_in_search": BN_BATCHES,
        },
        "interference_cores": interference.cores(),
        "budgets": budgets,
        "records": raw,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bn_recal.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "bn_recal.md").write_text(markdown(payload) + "\n")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
