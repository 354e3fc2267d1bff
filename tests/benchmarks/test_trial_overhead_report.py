"""trial_overhead.py's report: one table per trial length and job, and the two shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from trial_overhead import (  # noqa: E402
    JOBS,
    OVERHEAD_TARGET,
    STAGES,
    markdown,
    spec_for,
    steps_for_target,
    time_weighted_share,
)


def _trial(
    wall: float, finetune: float, evaluate: float, skipped: str | None = None
) -> dict[str, Any]:
    stages = {s: 0.0 for s in STAGES} | {"finetune": finetune, "evaluate": evaluate}
    return {"number": 0, "wall": wall, "skipped": skipped, "commits": 1, "stages": stages}


def test_the_time_weighted_share_weighs_long_trials_more() -> None:
    # a short trial with 50 % overhead and a long one with 10 %: the median trial is
    # either; the job spent 1 + 1 of 12 s outside training and evaluation
    trials = [_trial(2.0, 1.0, 0.0), _trial(10.0, 8.0, 1.0)]
    result: dict[str, Any] = {"steps_per_trial": 0, "trials": trials}
    assert time_weighted_share(result) == pytest.approx(2.0 / 12.0)
    # a trial skipped before training (infeasible) is no trial's work
    result["trials"].append(_trial(0.1, 0.0, 0.0, skipped="infeasible"))
    assert time_weighted_share(result) == pytest.approx(2.0 / 12.0)


@pytest.mark.parametrize("job", list(JOBS))
def test_each_job_is_a_valid_spec(job: str) -> None:
    spec = spec_for("resnet20_cifar", 8, 10, compute_epochs=10, job=job)
    assert spec.budget.flops == 0.5
    assert spec.measures_latency == (job != "constrained")
    assert spec.latency.predictor == ("table" if job == "latency-table" else "measure")


def test_the_report_has_a_table_per_length_and_job() -> None:
    committed = json.loads((BENCHMARKS / "results" / "trial_overhead.json").read_text())
    cells = {(r["steps_per_trial"], r["job"]) for r in committed["results"]}
    report = markdown(committed)
    tables = [line for line in report.splitlines() if line.startswith("## ") and "job `" in line]
    assert len(tables) == len(cells)
    assert report.count("(time-weighted)") == len(tables)


def test_the_steps_for_the_target_are_those_at_which_the_median_trial_passes() -> None:
    # 10 steps of 0.06 s, 0.2 s of evaluation and 0.1 s of overhead: 11.1 %; the middle
    # trial needs 12 steps (11: 10.4 %, 12: 9.8 %), the other two 9 and 15
    trials = [
        _trial(0.1 + 0.2 + 0.6, 0.6, 0.2),
        _trial(0.08 + 0.2 + 0.6, 0.6, 0.2),
        _trial(0.12 + 0.2 + 0.6, 0.6, 0.2),
    ]
    steps = steps_for_target(trials, 10)
    assert steps == 12

    def share(trial: dict[str, Any], n: int) -> float:
        overhead = trial["wall"] - 0.6 - 0.2
        return overhead / (overhead + 0.2 + 0.06 * n)

    assert sorted(share(t, steps) for t in trials)[1] < OVERHEAD_TARGET
    assert sorted(share(t, steps - 1) for t in trials)[1] > OVERHEAD_TARGET
