"""search_quality.py: the top rung's ranking of the reference plans against full
training, and whether the search delivered the best of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _quality_analysis import top_rung_vs_final  # noqa: E402


def _one_shot(method: str, seed: int, test: float) -> dict[str, Any]:
    return {
        "method": method,
        "seed": seed,
        "budget": 0.125,
        "reachable": True,
        "test_accuracy": test,
    }


def _search(seed: int, rung: dict[str, float], picked: str | None) -> dict[str, Any]:
    trials = [
        {"warm_start_kind": k, "rung_accuracy": [a - 0.1, a], "rung_loss": [1.0, 1.0 - a]}
        for k, a in rung.items()
    ]
    trials.append({"warm_start_kind": None, "rung_accuracy": [0.5, 0.9]})  # a sampled plan
    return {
        "method": "tpe",
        "seed": seed,
        "budget": 0.125,
        "reachable": True,
        "test_accuracy": 0.9,
        "trials": trials,
        "best_warm_start_kind": picked,
    }


def test_the_delivered_reference_is_judged_against_the_references_trained_alone() -> None:
    runs = [
        # seed 0: the rung ranks depth first, full training agrees, the search delivers it
        _search(0, {"uniform": 0.80, "depth": 0.85, "sensitivity": 0.70}, "depth"),
        _one_shot("uniform", 0, 0.88),
        _one_shot("depth", 0, 0.89),
        _one_shot("sensitivity", 0, 0.87),
        # seed 1: no depth one-shot run (its rung is ignored); the rung ranks uniform
        # first, full training global; the search delivers a sampled plan
        _search(1, {"uniform": 0.84, "global": 0.80, "depth": 0.95}, None),
        _one_shot("uniform", 1, 0.86),
        _one_shot("global", 1, 0.87),
        # seed 2: one reference run both ways is no ranking: skipped
        _search(2, {"uniform": 0.84}, "uniform"),
        _one_shot("uniform", 2, 0.86),
    ]
    row = top_rung_vs_final(runs)["0.125"]
    assert row["seeds"] == 2
    assert row["same_pick"] == 1  # seed 0 only
    assert row["delivered_best"] == 1 and row["delivered_sampled"] == 1
    assert row["spearman_ranks"] is not None
    assert (row["same_pick_by_loss"], row["seeds_with_loss"]) == (1, 2)


def test_the_loss_ranking_can_differ_from_the_accuracy_ranking() -> None:
    search = _search(0, {"uniform": 0.80, "depth": 0.85}, "depth")
    for trial in search["trials"]:  # depth is more accurate, uniform more confident
        if trial["warm_start_kind"] == "uniform":
            trial["rung_loss"] = [1.0, 0.10]
    runs = [search, _one_shot("uniform", 0, 0.89), _one_shot("depth", 0, 0.88)]
    row = top_rung_vs_final(runs)["0.125"]
    assert row["same_pick"] == 0 and row["same_pick_by_loss"] == 1
    assert row["delivered_best"] == 0


def test_searches_without_a_recorded_loss_are_not_judged_by_it() -> None:
    search = _search(0, {"uniform": 0.80, "depth": 0.85}, "depth")
    for trial in search["trials"]:
        trial.pop("rung_loss", None)
    runs = [search, _one_shot("uniform", 0, 0.88), _one_shot("depth", 0, 0.89)]
    row = top_rung_vs_final(runs)["0.125"]
    assert row["same_pick"] == 1
    assert row["same_pick_by_loss"] is None and row["seeds_with_loss"] == 0
