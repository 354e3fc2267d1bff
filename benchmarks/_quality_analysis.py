"""search_quality.py's numbers over runs: means and paired differences per cell, the
top rung against full training, the trial signals' correlations, and merging reports."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from _quality_baselines import same_baseline
from _quality_settings import METHODS, SEARCH_METHODS, STEP0_PRUNER
from scipy.stats import spearmanr


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def paired(mine: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> dict[str, Any]:
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
                    "vs_uniform": paired(mine, [r for r in cell if r["method"] == "uniform"]),
                    "vs_random": paired(mine, [r for r in cell if r["method"] == "random"]),
                    "val_accuracy_mean": statistics.fmean(r["val_accuracy"] for r in mine),
                    "macs_ratio_mean": statistics.fmean(r["macs_ratio"] for r in mine),
                    "params_mean": statistics.fmean(r["params"] for r in mine),
                    "latency_ms_mean": statistics.fmean(r["latency_ms"] for r in mine),
                    "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
                }
            )
    return rows


REFERENCE_KINDS = ("uniform", "global", "sensitivity", "depth")
"""Warm-start kinds of the search that are also one-shot methods (the same plan)."""


def top_rung_vs_final(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return, per budget, whether the search's top rung ranks the reference plans as
    full training does (the short-horizon bias of a rung search), and whether the plan
    it delivered was the best of them.

    For every seed with a ``tpe`` search and at least two of its reference plans also
    run as one-shot methods (:data:`REFERENCE_KINDS`, each trained with the whole
    compute): the plans' validation accuracy at the top rung of the search (they are
    references, so every one reaches it) against their test accuracy after full
    training. Reports the seeds where both pick the same plan, Spearman over the pooled
    within-seed ranks, and how the delivered plan fared: ``delivered_best``, seeds where
    the search delivered the reference that tests best trained alone;
    ``delivered_sampled``, seeds where it delivered a sampled plan instead;
    ``same_pick_by_loss`` (of ``seeds_with_loss``, the seeds whose search recorded
    ``rung_loss``): seeds where the lowest top-rung val loss, not the highest accuracy,
    names the plan best after full training (is the loss the earlier signal?).
    """
    out: dict[str, dict[str, Any]] = {}
    for budget in sorted({r["budget"] for r in runs}, reverse=True):
        agree = seeds = delivered_best = delivered_sampled = 0
        by_loss = [0, 0]  # seeds where the lowest top-rung val loss names the best; of
        rank_pairs: list[tuple[float, float]] = []
        for seed in sorted({r["seed"] for r in runs if r["budget"] == budget}):
            cell = {
                r["method"]: r
                for r in runs
                if r["budget"] == budget and r["seed"] == seed and r.get("reachable")
            }
            search = cell.get("tpe")
            if search is None:
                continue
            rung: dict[str, float] = {}
            loss: dict[str, float] = {}
            for trial in search["trials"]:
                kind, accuracies = trial.get("warm_start_kind"), trial.get("rung_accuracy")
                if kind in REFERENCE_KINDS and kind in cell and accuracies:
                    if accuracies[-1] >= rung.get(kind, 0.0):
                        rung[kind] = accuracies[-1]
                        if trial.get("rung_loss"):
                            loss[kind] = trial["rung_loss"][-1]
            kinds = sorted(rung)
            if len(kinds) < 2:
                continue
            final = {kind: cell[kind]["test_accuracy"] for kind in kinds}
            best = max(final, key=final.__getitem__)
            seeds += 1
            agree += max(rung, key=rung.__getitem__) == best
            if set(loss) == set(kinds):  # recorded since 2026-12-06 (stop 26)
                by_loss[0] += min(loss, key=loss.__getitem__) == best
                by_loss[1] += 1
            picked = search.get("best_warm_start_kind")
            delivered_best += picked == max(final, key=final.__getitem__)
            delivered_sampled += picked is None
            by_rung = sorted(kinds, key=rung.__getitem__)
            by_final = sorted(kinds, key=final.__getitem__)
            rank_pairs += [(by_rung.index(k), by_final.index(k)) for k in kinds]
        rho = None
        if len(rank_pairs) > 2:
            rho = float(spearmanr(*zip(*rank_pairs, strict=True)).statistic)
        out[str(budget)] = {
            "seeds": seeds,
            "same_pick": agree,
            "spearman_ranks": rho,
            "delivered_best": delivered_best,
            "delivered_sampled": delivered_sampled,
            "same_pick_by_loss": by_loss[0] if by_loss[1] else None,
            "seeds_with_loss": by_loss[1],
        }
    return out


def proxy_correlations(
    runs: Sequence[dict[str, Any]], val_images: int
) -> dict[str, dict[str, Any]]:
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
        # with rungs: does the first rung's accuracy rank the candidates as their last does?
        rung_pairs = [
            (t["rung_accuracy"][0], t["rung_accuracy"][-1])
            for t in trials
            if len(t.get("rung_accuracy") or []) > 1
        ]
        rung_rho = None
        if len(rung_pairs) > 2:
            rung_rho = float(spearmanr(*zip(*rung_pairs, strict=True)).statistic)
        out[str(budget)] = {
            "pairs": len(pairs),
            "spearman_proxy_vs_val": rho,
            "promoted_trials": len(rung_pairs),
            "spearman_first_vs_last_rung": rung_rho,
            "proxy_at_chance_share": (
                sum(v <= 0.1 + 2 / val_images for v in proxies) / len(proxies) if proxies else None
            ),
        }
    return out


def _check_same_baselines(reports: Sequence[dict[str, Any]]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for report in reports:
        for seed, baseline in report["baselines"].items():
            first = seen.setdefault(seed, baseline)
            if not same_baseline(first, baseline):
                accuracies = [b.get("train", {}).get("test_accuracy") for b in (first, baseline)]
                raise ValueError(
                    f"the reports started seed {seed} from different baselines (test "
                    f"accuracy {accuracies[0]} vs {accuracies[1]}): retrained weights "
                    "(another machine, another torch) cannot be paired with the first "
                    "ones; rerun every method on one set"
                )


def combine(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return one report holding the runs and baselines of ``reports`` (same settings).

    A run of the same method, budget and seed in a later report replaces the earlier one
    (rerunning a method after a change to it keeps the others' runs). Settings, split
    sizes, machine and pruner come from the last report, the finishing time from the
    latest; ``machines`` names every CPU the reports ran on (each seed's runs share one
    baseline, so one machine). A seed's baseline is the first report's record of it:
    the others hold the same tensors (checked), measured again, perhaps under other
    load, so adding runs leaves the baselines' table as it was.

    Raises:
        ValueError: two reports started a seed from different baseline weights (a
            baseline retrained on another machine differs): their runs cannot be paired.
    """
    _check_same_baselines(reports)
    last = reports[-1]
    by_key = {
        (run["method"], run["budget"], run["seed"]): run
        for report in reports
        for run in report["runs"]
    }
    runs = list(by_key.values())
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    methods += sorted({r["method"] for r in runs} - set(methods))
    baselines: dict[str, Any] = {}
    for report in reports:
        for seed, baseline in report["baselines"].items():
            baselines.setdefault(seed, baseline)
    seeds = sorted({run["seed"] for run in runs})
    budgets = sorted({run["budget"] for run in runs}, reverse=True)
    finished = max(report["machine"]["finished_at"] for report in reports)  # ISO, UTC
    return last | {
        "machine": last["machine"] | {"finished_at": finished},
        "settings": last["settings"] | {"seeds": seeds, "budgets": budgets},
        "methods": methods,
        "pruner": last.get("pruner", STEP0_PRUNER),
        "wall_s": sum(report["wall_s"] for report in reports),
        "interference_cores": max(report["interference_cores"] for report in reports),
        "combined_from": len(reports),
        "machines": sorted(
            {
                cpu
                for report in reports
                for cpu in report.get("machines", [report["machine"]["cpu"]])
            }
        ),
        "baselines": baselines,
        "summary": summarize(runs, methods),
        "proxy_correlations": proxy_correlations(runs, last["split_sizes"]["val"]),
        "runs": runs,
    }
