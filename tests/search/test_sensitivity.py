"""Sensitivity scan: one group narrowed at a time; allocation of the budget by it."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, cast

import pytest
import torch

from models.cost import AnalyticCost, Cost
from models.prune import ChannelGroup, PruningGraph
from search import PruningProblem, SearchError, SearchSpace, load_problem
from search.budget import ResolvedBudget
from search.sensitivity import scan_sensitivity, scan_widths
from search.sensitivity_allocation import allocate_by_sensitivity
from search.sensitivity_record import GroupSensitivity, Sensitivity, SensitivityPoint
from tests.search.conftest import tiny_spec


@pytest.fixture(scope="module")
def scan(problem: PruningProblem) -> Sensitivity:
    return scan_sensitivity(problem)


def test_scan_covers_every_group_at_allowed_narrower_widths(
    problem: PruningProblem, scan: Sensitivity
) -> None:
    assert [g.name for g in scan.groups] == [g.name for g in problem.space.groups]
    assert scan.criterion == problem.spec.pruning.criterion
    assert scan.baseline_accuracy == problem.baseline.val_accuracy
    assert 0.0 <= scan.reference_accuracy <= 1.0
    for group, scanned in zip(problem.space.groups, scan.groups, strict=True):
        assert scanned.channels == group.channels
        assert scanned.points, f"{group.name} has no scanned width"
        widths = [p.width for p in scanned.points]
        assert widths == sorted(set(widths), reverse=True)
        for point in scanned.points:
            assert point.width in group.allowed_widths() and point.width < group.channels
            assert 0.0 <= point.val_accuracy <= 1.0
            assert point.macs < scan.baseline_macs, "narrowing a group saves MACs"
        macs = [p.macs for p in scanned.points]
        assert macs == sorted(macs, reverse=True), "narrower never costs more"


def test_scan_is_deterministic_and_leaves_the_model_alone(
    problem: PruningProblem, scan: Sensitivity
) -> None:
    before = copy.deepcopy(problem.model.state_dict())
    again = scan_sensitivity(problem)
    assert again.groups == scan.groups and again.reference_accuracy == scan.reference_accuracy
    after = problem.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_narrowed_group_loses_accuracy_somewhere(scan: Sensitivity) -> None:
    # trained weights: quartering some group must hurt, or the scan measures nothing
    worst = max(scan.drop(g.name, g.points[-1].width) for g in scan.groups)
    assert worst > 0.02


def test_scan_widths_picks_nearest_allowed_and_skips_repeats() -> None:
    group = ChannelGroup("conv", channels=64, step=8, min_channels=8, layers=("conv",))
    assert scan_widths(group, (0.75, 0.5, 0.25)) == [48, 32, 16]
    small = ChannelGroup("small", channels=16, step=8, min_channels=8, layers=("small",))
    assert scan_widths(small, (0.75, 0.5, 0.25)) == [8]
    odd = ChannelGroup("odd", channels=20, step=8, min_channels=8, layers=("odd",))
    assert scan_widths(odd, (0.75, 0.5)) == [16, 8]


def test_scan_refuses_fractions_outside_the_open_interval(problem: PruningProblem) -> None:
    with pytest.raises(SearchError, match="fractions"):
        scan_sensitivity(problem, fractions=(0.5, 1.0))


def test_round_trips_through_json(scan: Sensitivity) -> None:
    text = json.dumps(scan.to_dict())
    assert Sensitivity.from_dict(json.loads(text)) == scan


def _mangled(scan: Sensitivity, change: Any) -> dict[str, Any]:
    data = scan.to_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(format=2),
        lambda d: d.pop("criterion"),
        lambda d: d.update(reference_accuracy=1.5),
        lambda d: d.update(baseline_macs="many"),
        lambda d: d["groups"][0]["points"][0].update(width=d["groups"][0]["channels"]),
        lambda d: d["groups"][0]["points"][0].update(width=True),
        lambda d: d["groups"][0]["points"][0].update(val_accuracy=-0.1),
        lambda d: d["groups"][0].update(points=[]),
        lambda d: d["groups"].append(d["groups"][0]),
        lambda d: d.update(groups="none"),
    ],
    ids=[
        "format",
        "no-criterion",
        "accuracy>1",
        "macs-text",
        "full-width-point",
        "bool-width",
        "negative-accuracy",
        "no-points",
        "group-twice",
        "groups-not-a-list",
    ],
)
def test_from_dict_refuses_malformed_input(scan: Sensitivity, change: Any) -> None:
    with pytest.raises(SearchError, match="not a sensitivity scan"):
        Sensitivity.from_dict(_mangled(scan, change))


def test_from_dict_refuses_what_is_not_an_object() -> None:
    with pytest.raises(SearchError, match="not a sensitivity scan"):
        Sensitivity.from_dict([1, 2, 3])


# -- allocation --------------------------------------------------------------------------
def _toy(reference: float = 0.9) -> Sensitivity:
    """A insensitive, B sensitive; both 32 channels of equal cost."""

    def points(drops: dict[int, float]) -> tuple[SensitivityPoint, ...]:
        return tuple(SensitivityPoint(w, 0, reference - d) for w, d in drops.items())

    return Sensitivity(
        criterion="l1",
        baseline_accuracy=reference,
        reference_accuracy=reference,
        baseline_macs=1,
        fractions=(0.75, 0.5, 0.25),
        groups=(
            GroupSensitivity("a", 32, points({24: 0.0, 16: 0.01, 8: 0.02})),
            GroupSensitivity("b", 32, points({24: 0.05, 16: 0.2, 8: 0.5})),
        ),
    )


class _LinearCost:
    """MACs = 100 per channel of a and of b: a cost model without a network."""

    baseline = Cost(macs=6400, params=6400, size_bytes=25600)

    def predict(self, plan: Mapping[str, int]) -> Cost:
        macs = 100 * (plan.get("a", 32) + plan.get("b", 32))
        return Cost(macs=macs, params=macs, size_bytes=4 * macs)


def _toy_space(max_macs: int) -> SearchSpace:
    groups = tuple(ChannelGroup(n, 32, 8, 8, (n,)) for n in ("a", "b"))
    graph = PruningGraph(
        groups=groups, layers={}, input_shape=(1, 1, 1), output_layer="fc", round_to=8
    )
    cost = cast(AnalyticCost, _LinearCost())
    return SearchSpace(graph, cost, ResolvedBudget(max_macs=max_macs))


def test_allocation_narrows_the_insensitive_group_more() -> None:
    space = _toy_space(max_macs=4000)  # 40 of 64 channels
    plan = allocate_by_sensitivity(_toy(), space)
    assert space.fits(plan)
    assert plan["a"] < plan["b"]
    assert plan.to_dict() == {"a": 8, "b": 32}
    assert allocate_by_sensitivity(_toy(), space) == plan, "deterministic"


def test_allocation_hands_back_steps_while_the_budget_allows() -> None:
    space = _toy_space(max_macs=4800)  # 48 of 64 channels: a at 16, b at full
    assert allocate_by_sensitivity(_toy(), space).to_dict() == {"a": 16, "b": 32}


def test_allocation_keeps_full_widths_when_they_fit() -> None:
    space = _toy_space(max_macs=6400)
    assert allocate_by_sensitivity(_toy(), space).to_dict() == {"a": 32, "b": 32}


def test_allocation_refuses_a_scan_of_other_groups() -> None:
    space = _toy_space(max_macs=4000)
    other = Sensitivity(
        criterion="l1",
        baseline_accuracy=0.9,
        reference_accuracy=0.9,
        baseline_macs=1,
        fractions=(0.5,),
        groups=(GroupSensitivity("a", 32, (SensitivityPoint(16, 0, 0.8),)),),
    )
    with pytest.raises(SearchError, match="no group 'b'"):
        allocate_by_sensitivity(other, space)


@pytest.mark.parametrize("flops", [0.7, 0.5, 0.3, 0.15])
def test_allocation_fits_wherever_the_uniform_plan_does(
    trained_weights: bytes, scan: Sensitivity, flops: float
) -> None:
    problem = load_problem(tiny_spec(budget={"flops": flops}), weights=trained_weights)
    uniform = problem.space.uniform_at_budget()
    assert problem.space.fits(uniform)
    plan = allocate_by_sensitivity(scan, problem.space)
    assert problem.space.fits(plan)
    for g in problem.space.groups:
        assert plan[g.name] in g.allowed_widths()
    # greedy hand-back: no single step up still fits
    for g in problem.space.groups:
        widths = g.allowed_widths()
        i = widths.index(plan[g.name])
        if i + 1 < len(widths):
            assert not problem.space.fits(dict(plan) | {g.name: widths[i + 1]})
