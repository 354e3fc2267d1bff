"""search_quality.py: an unreachable budget is reported with the narrowest model global
magnitude pruning reached over every ratio it scans, not with the one at its largest
ratio (MACs do not fall monotonically with Torch-Pruning's ratio)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from models.prune import Plan
from search import PruningProblem, load_problem
from tests.search.conftest import tiny_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import search_quality  # noqa: E402


def _widths_at(problem: PruningProblem, kept: float) -> Plan:
    """The plan keeping about ``kept`` of every group's channels (an allowed width)."""
    widths = {}
    for group in problem.space.groups:
        allowed = group.allowed_widths()
        widths[group.name] = min(allowed, key=lambda w: abs(w - kept * group.channels))
    return Plan(widths)


def test_an_unreachable_budget_names_the_narrowest_model_of_the_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = load_problem(tiny_spec())
    # narrowest at ratio 0.5, then wider again, as a group kept whole makes it
    kept_at = {round(step * 0.05, 2): 1.0 - min(step, 20 - step) * 0.05 for step in range(1, 20)}

    def fake_widths(model: Any, graph: Any, ratio: float, **kwargs: Any) -> Plan:
        return _widths_at(problem, kept_at[round(ratio, 2)])

    monkeypatch.setattr(search_quality, "global_magnitude_plan", lambda _problem: None)
    monkeypatch.setattr(search_quality, "global_magnitude_widths", fake_widths)
    with pytest.raises(search_quality.UnreachableBudgetError) as raised:
        search_quality.global_choice(problem)
    ratios = {
        kept: problem.space.predict(_widths_at(problem, kept)).macs / problem.baseline.cost.macs
        for kept in kept_at.values()
    }
    assert raised.value.smallest == pytest.approx(min(ratios.values()))
    assert raised.value.smallest < ratios[kept_at[0.95]]
