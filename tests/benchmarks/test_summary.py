"""search_quality_summary.json rows and issue 11's goal, judged per cell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _summary import goal_verdict, summary_rows, update_summary  # noqa: E402


def _payload(accuracies: dict[str, list[float]], unpruned: list[float]) -> dict[str, Any]:
    """A one-budget equal-compute report: ``accuracies[method][seed]`` test accuracy."""
    runs = [
        {"method": m, "budget": 0.0625, "seed": seed, "reachable": True, "test_accuracy": acc}
        for m, accs in accuracies.items()
        for seed, acc in enumerate(accs)
    ]
    return {
        "dataset": "fashion_mnist",
        "arch": "resnet56_cifar",
        "settings": {"compute_epochs": 20.0},
        "baselines": {
            str(seed): {"measured": {"test_accuracy": acc}} for seed, acc in enumerate(unpruned)
        },
        "runs": runs,
    }


def _row(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    return next(r for r in rows if r["method"] == method)


def test_the_goal_needs_a_full_point_on_every_seed_when_the_gap_is_wide() -> None:
    rows = summary_rows(
        _payload(
            {"tpe": [0.880, 0.871], "uniform": [0.865, 0.860], "global": [0.868, 0.860]},
            unpruned=[0.900, 0.900],
        )
    )
    tpe = _row(rows, "tpe")
    assert tpe["best_baseline"] == "global"
    assert tpe["paired_vs_best_baseline_mean"] == pytest.approx((1.2 + 1.1) / 2)
    assert tpe["goal_margin_points"] == pytest.approx(1.0)  # half the gap: 1.6
    assert tpe["goal_met"] is True
    assert "goal_met" not in _row(rows, "uniform")  # judged for the default search only


def test_one_seed_short_of_the_margin_fails_the_goal() -> None:
    rows = summary_rows(
        _payload({"tpe": [0.880, 0.865], "global": [0.868, 0.860]}, unpruned=[0.900, 0.900])
    )
    tpe = _row(rows, "tpe")
    assert tpe["wins"] == 2  # both seeds win, but seed 1 by 0.5 points only
    assert tpe["goal_met"] is False
    assert tpe["goal_met_on_mean"] is False  # the mean lead, 0.85, is short of 1.0 too


def test_on_the_mean_a_short_seed_passes_but_a_lost_one_does_not() -> None:
    """The two readings of the goal: every seed above the margin (strict), or the mean
    above it with every seed a win (on the mean)."""
    short = goal_verdict([1.8, 0.4], best_baseline=[0.86, 0.86], unpruned=[0.90, 0.90])
    assert short["goal_margin_points"] == pytest.approx(1.0)
    assert short["goal_met"] is False  # seed 1 leads by 0.4 only
    assert short["goal_met_on_mean"] is True  # mean lead 1.1, both seeds won
    lost = goal_verdict([2.5, -0.1], best_baseline=[0.86, 0.86], unpruned=[0.90, 0.90])
    assert lost["goal_met_on_mean"] is False  # mean lead 1.2, but seed 1 lost


def test_half_the_gap_is_the_margin_when_smaller() -> None:
    verdict = goal_verdict([0.5, 0.45], best_baseline=[0.890, 0.888], unpruned=[0.898, 0.898])
    assert verdict["goal_margin_points"] == pytest.approx(0.45)  # gap 0.9 points
    assert verdict["goal_met"] is False  # 0.45 is not above 0.45
    assert goal_verdict([0.5, 0.46], [0.890, 0.888], [0.898, 0.898])["goal_met"] is True


def test_a_baseline_above_the_unpruned_model_still_demands_a_win() -> None:
    """Half a negative gap would let a loss pass; the margin never drops below zero."""
    verdict = goal_verdict([-0.1], best_baseline=[0.885], unpruned=[0.880])
    assert verdict["goal_margin_points"] == 0.0
    assert verdict["goal_met"] is False
    assert verdict["behind_by_more_than_spread"] is True  # one seed: no spread to hide in


def test_behind_within_the_seed_to_seed_spread_is_reported_as_such() -> None:
    # the best baseline's std over seeds: 1.0 point
    verdict = goal_verdict([-0.5, -0.3, -0.4], [0.87, 0.88, 0.89], [0.9, 0.9, 0.9])
    assert verdict["spread_points"] == pytest.approx(1.0)
    assert verdict["behind_by_more_than_spread"] is False
    assert verdict["goal_met"] is False


def test_the_best_baseline_is_judged_on_the_seeds_the_search_ran() -> None:
    # uniform is best on seed 1 (the only seed tpe ran); fastnas ran on seed 1 only and
    # beats uniform's mean over both seeds, but not uniform on seed 1
    payload = _payload({"uniform": [0.8764, 0.8846]}, [0.8827, 0.8942])
    payload["runs"] += [
        {"method": m, "budget": 0.0625, "seed": 1, "reachable": True, "test_accuracy": acc}
        for m, acc in (("fastnas", 0.8807), ("tpe", 0.8852))
    ]
    tpe = _row(summary_rows(payload), "tpe")
    assert tpe["best_baseline"] == "uniform"
    assert tpe["best_baseline_test_accuracy_mean"] == pytest.approx(0.8846)
    assert tpe["paired_vs_best_baseline_mean"] == pytest.approx(0.06)


def test_the_same_compute_yardstick_raises_the_unpruned_accuracy_and_the_margin() -> None:
    payload = _payload({"tpe": [0.880], "uniform": [0.875]}, unpruned=[0.876])
    no_yardstick = _row(summary_rows(payload), "tpe")
    assert no_yardstick["goal_margin_points"] == pytest.approx(0.05)  # half of 0.1
    assert no_yardstick["goal_met"] is True
    payload["runs"].append(
        {
            "method": "unpruned",
            "budget": 0.0625,
            "seed": 0,
            "reachable": True,
            "test_accuracy": 0.895,
        }
    )
    rows = summary_rows(payload)
    tpe = _row(rows, "tpe")
    assert tpe["unpruned_test_accuracy_mean"] == pytest.approx(0.895)
    assert tpe["goal_margin_points"] == pytest.approx(1.0)  # half of 2.0 points
    assert tpe["goal_met"] is False
    assert all(r["method"] != "unpruned" for r in rows)  # a yardstick, not a method


def test_a_yardstick_below_the_trained_baseline_changes_nothing() -> None:
    payload = _payload({"tpe": [0.880], "uniform": [0.875]}, unpruned=[0.890])
    payload["runs"].append(
        {
            "method": "unpruned",
            "budget": 0.0625,
            "seed": 0,
            "reachable": True,
            "test_accuracy": 0.885,
        }
    )
    assert _row(summary_rows(payload), "tpe")["unpruned_test_accuracy_mean"] == pytest.approx(0.890)


def test_the_distilled_uniform_ablation_is_never_the_baseline_to_beat() -> None:
    payload = _payload(
        {"tpe": [0.890, 0.885], "uniform": [0.870, 0.868], "uniform_distilled": [0.895, 0.890]},
        unpruned=[0.900, 0.900],
    )
    rows = summary_rows(payload)
    assert _row(rows, "tpe")["best_baseline"] == "uniform"
    assert _row(rows, "tpe")["distill"] == "searches"  # the default recipe
    payload["settings"]["distill"] = True
    assert _row(summary_rows(payload), "tpe")["distill"] == "all"
    payload["settings"]["distill"] = False
    assert _row(summary_rows(payload), "tpe")["distill"] == "none"


def test_a_report_at_other_compute_keeps_the_rows_it_does_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    ten = _payload({"tpe": [0.86, 0.85], "uniform": [0.85, 0.84]}, unpruned=[0.87, 0.87])
    ten["settings"]["compute_epochs"] = 10.0
    update_summary(path, ten)
    twenty = _payload({"tpe": [0.89, 0.88], "uniform": [0.88, 0.87]}, unpruned=[0.89, 0.89])
    update_summary(path, twenty)
    twenty["runs"] = [r | {"test_accuracy": 0.9} for r in twenty["runs"]]
    update_summary(path, twenty)  # a rerun at 20 epochs replaces its own rows only
    rows = json.loads(path.read_text())
    by_compute = sorted((r["compute_epochs"], r["method"], r["test_accuracy_mean"]) for r in rows)
    assert by_compute == [
        (10.0, "tpe", pytest.approx(0.855)),
        (10.0, "uniform", pytest.approx(0.845)),
        (20.0, "tpe", pytest.approx(0.9)),
        (20.0, "uniform", pytest.approx(0.9)),
    ]
