"""search_quality.py's markdown report, and writing NAME.json and NAME.md."""

from __future__ import annotations

import collections
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _quality_analysis import paired, top_rung_vs_final
from _quality_settings import (
    DISTILL_TEMPERATURE,
    DISTILL_WEIGHT,
    EQUAL_COMPUTE,
    NOTES_MARKER,
    SEARCH_METHODS,
    STEP0_PRUNER,
    YARDSTICK,
)
from _summary import GOAL_METHOD, summary_rows


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _gain(diff: dict[str, Any]) -> str:
    """Render a :func:`_quality_analysis.paired` difference in points, with wins/losses."""
    if not diff["pairs"]:
        return "—"
    return f"{100 * diff['mean']:+.2f} ± {100 * diff['std']:.2f} ({diff['wins']}/{diff['losses']})"


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
        "| MACs budget | method | smallest plan | uniform plan | picks | distinct "
        "plans | sampled plans | pruned trials | fine-tuned trials | best − median trial "
        "val (pts) | sampling s/trial |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
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
                f"{_picks(mine)} | "
                f"{statistics.fmean(r['distinct_plans'] for r in mine):.1f} | "
                f"{statistics.fmean(_sampled_plans(r) for r in mine):.1f} | "
                f"{statistics.fmean(r['pruned_trials'] for r in mine):.1f} | "
                f"{statistics.fmean(r['fine_tuned_trials'] for r in mine):.1f} | "
                f"{100 * spread:.2f} | {sampling:.3f} |"
            )
    return lines


def _picks(runs: list[dict[str, Any]]) -> str:
    """Return what the searches of ``runs`` delivered: a reference plan's kind
    (``uniform``, ``depth``, ...) or ``sampled``, with counts."""
    kinds = collections.Counter(
        r.get("best_warm_start_kind")
        or ("uniform" if r["best_is_uniform_warm_start"] else "sampled")
        for r in runs
    )
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))


def _sampled_plans(run: dict[str, Any]) -> int:
    """Return how many different plans of a search's trials no reference proposed."""
    return len(
        {
            json.dumps(t["plan"], sort_keys=True)
            for t in run["trials"]
            if not t.get("warm_start_kind")
        }
    )


def _compute_paragraph(payload: dict[str, Any]) -> str:
    """Return the settings paragraph of an equal-compute report (``--compute-epochs``)."""
    s = payload["settings"]
    return (
        f"**Equal compute: every method trains {s['compute_epochs']:g} epochs of the "
        "training split in all.** The one-shot methods (`uniform`, `global`, "
        "`sensitivity`, `fastnas`) choose their widths without training and spend all "
        "of it fine-tuning them "
        "(`search.final.finalize`: BatchNorm recalibration, then one cosine schedule). "
        f"The searches run `search.compute_epochs` {s['compute_epochs']:g} as the product "
        f"does (`FINAL_SHARE` {s.get('final_share', 0.5):g} of it is the delivered model's "
        "own training): candidates in three rungs with asynchronous successive halving "
        "and pausing, the uniform, global-magnitude and sensitivity plans as warm starts, "
        "the winner trained on from its checkpoint with everything left "
        "(`compute_epochs_spent` in the JSON). Identical for every method: lr "
        f"{s['lr']}, batch {s['batch_size']}, criterion {s['criterion']}, round_to "
        f"{s['round_to']}. {_distill_sentence(s.get('distill'))}"
        f"{_distill_loss_sentence(s)}"
    )


def _distill_sentence(distill: bool | None) -> str:
    """Return who distilled the unpruned model in a report (``--distill``'s setting)."""
    if distill is True:
        return "Every method distills the unpruned model in all its training. "
    if distill is False:
        return "No method distills: every one trains on labels only. "
    return (
        "The searches distill the unpruned model as the product does by default (its "
        "logits on the training split computed once per job, `models.train.SoftTargets`; "
        "`tpe_plain`: labels only); the one-shot methods and the yardstick train on "
        "labels only, as the one-liners they stand for do (`uniform_distilled`: the "
        "uniform plan with the searches' distillation, an ablation). "
    )


def _distill_loss_sentence(settings: dict[str, Any]) -> str:
    """Return the distillation loss's weight and temperature in a report where they are
    not the product's defaults (``--distill-weight``, ``--distill-temperature``)."""
    weight = settings.get("distill_weight", DISTILL_WEIGHT)
    temperature = settings.get("distill_temperature", DISTILL_TEMPERATURE)
    if (weight, temperature) == (DISTILL_WEIGHT, DISTILL_TEMPERATURE) or settings.get(
        "distill"
    ) is False:
        return ""
    return (
        f"**Distillation loss: weight {weight:g}, temperature {temperature:g}** (the "
        f"product's defaults are {DISTILL_WEIGHT:g} and {DISTILL_TEMPERATURE:g}). "
    )


def _goal_lines(payload: dict[str, Any]) -> list[str]:
    """Return the section that judges issue 11's goal on each budget (equal compute)."""
    rows = [
        r
        for r in summary_rows(payload)
        if r["method"] == GOAL_METHOD and r.get("goal_margin_points") is not None
    ]
    if not rows:
        return []
    lines = [
        "## Against the goal",
        "",
        f"`{GOAL_METHOD}` against the best equal-compute one-shot method of its cell "
        "(`sensitivity`, the product's own one-shot plan, counts as one): the goal is a "
        "lead of 1.0 point, or of half of that method's gap to the unpruned model where "
        "that is smaller, never less than a win (an unpruned model that tests below a "
        "pruned one makes the gap negative), winning on every seed. *Met* reads it "
        "strictly: every seed's lead exceeds the margin. *Met on the mean* reads it as "
        "the summary row states it: the mean paired lead exceeds the margin and every "
        "seed is a win. The unpruned model trained "
        f"{payload['settings']['base_epochs']} epochs and every pruned one "
        f"{payload['settings']['compute_epochs']:g} more from its weights, so where the "
        "unpruned model is short of training the gap, and the margin, are small; where "
        f"the `{YARDSTICK}` yardstick ran (the unpruned model trained on with the same "
        "compute and recipe) a seed's unpruned accuracy is the better of the two. "
        "*Spread*: the best method's seed-to-seed std; the goal also asks that the search "
        "is never behind by more than that in any cell. The one-shot methods train on "
        "labels only, as the one-liners they stand for do; the search distills the "
        "unpruned model as the product does by default. *vs uniform distilled*: the "
        "search against the uniform plan trained with the same distillation (an "
        "ablation, not a baseline: how much of the lead is the distillation).",
        "",
        "| MACs budget | best one-shot | seeds | paired (pts) | W/L | margin (pts) | met | "
        "met on the mean | spread (pts) | behind by more than spread | "
        "vs uniform distilled (pts, W/L) |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|---|---:|",
    ]
    for r in rows:
        spread = "—" if r["spread_points"] is None else f"{r['spread_points']:.2f}"
        cell = [x for x in payload["runs"] if x["budget"] == r["budget"] and x.get("reachable")]
        ablation = paired(
            [x for x in cell if x["method"] == GOAL_METHOD],
            [x for x in cell if x["method"] == "uniform_distilled"],
        )
        lines.append(
            f"| {r['budget']:g} | {r['best_baseline']} | {len(r['seeds'])} | "
            f"{r['paired_vs_best_baseline_mean']:+.2f} | {r['wins']}/{r['losses']} | "
            f"{r['goal_margin_points']:.2f} | {'yes' if r['goal_met'] else '**no**'} | "
            f"{'yes' if r['goal_met_on_mean'] else '**no**'} | "
            f"{spread} | {'**yes**' if r['behind_by_more_than_spread'] else 'no'} | "
            f"{_gain(ablation)} |"
        )
    return [*lines, ""]


def markdown(payload: dict[str, Any]) -> str:
    """Return the markdown report: machine, settings, baselines, results, diagnostics."""
    s, m = payload["settings"], payload["machine"]
    lib = m["libraries"]
    extra = s["trials"] * s["epochs_per_trial"]
    test_images, val_images = payload["split_sizes"]["test"], payload["split_sizes"]["val"]
    lines = [
        "# Search quality: Bayesian search vs one-shot width choices",
        "",
        f"{payload['arch']} on `{payload['dataset']}` "
        f"({'x'.join(map(str, payload['input_shape']))}"
        + (f"; {payload['dataset_note']}" if payload.get("dataset_note") else "")
        + f"). Machine: {' and '.join(payload.get('machines', [m['cpu']]))}, "
        f"{m['cores']} cores, torch on 1 thread; torch {lib['torch']}, optuna {lib['optuna']}, "
        f"torch-pruning {lib['torch-pruning']}, onnxruntime {lib['onnxruntime']}; finished "
        f"{m['finished_at']}. "
        f"Total wall time {payload['wall_s'] / 60:.1f} min, while other processes took "
        f"{payload['interference_cores']:.2f} cores on average (wall times are inflated by "
        "that much sharing).",
        "",
        _compute_paragraph(payload)
        if s.get("compute_epochs") is not None
        else f"Identical for every method: lr {s['lr']} (cosine), batch {s['batch_size']}, "
        f"criterion {s['criterion']} (which channels of a group go), round_to "
        f"{s['round_to']}, final fine-tune {s['final_epochs']:g} epochs after BatchNorm "
        "recalibration (`search.final.finalize`). Only the per-group widths differ. "
        f"Searches (`tpe`, `gp`, `random`): {s['trials']} trials of {s['epochs_per_trial']:g} "
        "epochs each, objective `constrained` (`budget.flops`), warm start with the uniform "
        f"plan, {payload.get('pruner', STEP0_PRUNER)}, as the product runs "
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
        f"The test split has {test_images} images: one image is "
        f"{100 / test_images:.2g} points. MACs "
        "(fvcore) and params of the final model; latency: onnxruntime, batch 1, one "
        "thread, median. Wall s: choosing the plan (search or bisection) plus the final "
        "fine-tune and measurements.",
        "",
        *_results_table(payload),
        "",
        *(_goal_lines(payload) if s.get("compute_epochs") is not None else []),
        "## Search diagnostics (mean over seeds)",
        "",
        "*smallest plan* / *uniform plan*: MACs ratio of the narrowest plan the space "
        "allows and of the uniform plan at the budget. *picks*: what the searches delivered, "
        "one of the reference plans (the one-shot methods' widths, trained in the search) "
        "or a sampled plan. *distinct plans*: different plans among the trials after "
        "projection onto the budget; *sampled plans*: those that are no reference's. "
        "*best − median trial val*: "
        "spread of the fine-tuned trials' val accuracy (one val image = "
        f"{100 / val_images:.2g} points).",
        "",
        *_diagnostics_table(payload),
        "",
        "Trial signals, pooled over the searches of a budget: Spearman correlation of the "
        "BN-recalibrated accuracy (the median pruner's input) with the val accuracy after "
        "the trial fine-tune (the ranking `select_best` uses), and how many trials were "
        f"at chance (≤ {10 + 200 / val_images:.1f} %) after BN recalibration alone. A rung "
        "search (`--compute-epochs`) computes no proxy since 2026-12-06 (its first rung is "
        "the cheap signal); its trials count only where an earlier run recorded one.",
        "",
        "With `--compute-epochs`: Spearman correlation of a promoted candidate's accuracy "
        "after its first rung with its accuracy after its last (does the cheap rung rank "
        "candidates as the longer ones do?).",
        "",
        "| MACs budget | trials with a proxy | Spearman proxy vs val | proxy at chance "
        "| promoted trials | Spearman first vs last rung |",
        "|---:|---:|---:|---:|---:|---:|",
    ]

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    for budget, c in payload["proxy_correlations"].items():
        rho = number(c["spearman_proxy_vs_val"])
        share = "—" if c["proxy_at_chance_share"] is None else f"{c['proxy_at_chance_share']:.0%}"
        rung_rho = number(c.get("spearman_first_vs_last_rung"))
        lines.append(
            f"| {float(budget):g} | {c['pairs']} | {rho} | {share} "
            f"| {c.get('promoted_trials', '—')} | {rung_rho} |"
        )
    lines.append("")
    versus = top_rung_vs_final(payload["runs"])
    if any(row["seeds"] for row in versus.values()):
        lines += [
            "Top rung against full training: the one-shot plans (uniform, global, "
            "sensitivity, depth) are references in the search, so each reaches its top "
            "rung; each is also trained with the whole compute as a one-shot method (a "
            "seed counts the references that ran both ways, at least two). *Same pick*: "
            "seeds where the plan best at the top rung (val) is the plan best after full "
            "training (test); *Spearman*: of the plans' ranks, pooled over seeds; "
            "*delivered the best reference*: seeds where the search delivered the "
            "reference that tests best trained alone (its pick among the references was "
            "right); *delivered a sampled plan*: seeds where it delivered none of them; "
            "*same pick by val loss*: as *same pick*, ranking the top rung by val "
            "cross-entropy instead of accuracy (seeds whose search recorded it).",
            "",
            "| MACs budget | seeds | same pick | Spearman of ranks | delivered the best "
            "reference | delivered a sampled plan | same pick by val loss |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for budget, row in versus.items():
            if row["seeds"]:
                n, with_loss = row["seeds"], row.get("seeds_with_loss", 0)
                by_loss = f"{row['same_pick_by_loss']}/{with_loss}" if with_loss else "—"
                lines.append(
                    f"| {float(budget):g} | {n} | {row['same_pick']}/{n} "
                    f"| {number(row['spearman_ranks'])} | {row.get('delivered_best', 0)}/{n} "
                    f"| {row.get('delivered_sampled', 0)}/{n} | {by_loss} |"
                )
        lines.append("")
    return "\n".join(lines)


def write_report(
    payload: dict[str, Any],
    out_dir: Path,
    name: str,
    render: Callable[[dict[str, Any]], str] | None = None,
) -> Path:
    """Write NAME.json and NAME.md (``render(payload)``, this benchmark's
    :func:`markdown` by default), keeping hand-written findings below the marker."""
    render = render or markdown
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    page = out_dir / f"{name}.md"
    notes = ""
    if page.exists() and NOTES_MARKER in page.read_text():
        notes = page.read_text().split(NOTES_MARKER, 1)[1]
    page.write_text(render(payload) + "\n" + NOTES_MARKER + notes)
    return page
