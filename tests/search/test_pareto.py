"""The front, its hypervolume, the pick, and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import JobSpec, ParetoPoint, hypervolume, pareto_front, plot_pareto
from search.pareto import _knee


def point(
    trial: int, acc: float, macs: int, latency: float | None = None, feasible: bool = True
) -> ParetoPoint:
    return ParetoPoint(
        trial=trial,
        val_accuracy=acc,
        macs=macs,
        params=macs // 10,
        latency_ms=latency,
        feasible=feasible,
        plan={},
    )


POINTS = [
    point(0, 0.90, 100),
    point(1, 0.80, 50),
    point(2, 0.70, 60),
    point(3, 0.85, 100),
    point(4, 0.60, 20),
]


def test_front_keeps_only_non_dominated_points_sorted_by_cost() -> None:
    assert [p.trial for p in pareto_front(POINTS)] == [4, 1, 0]


def test_latency_is_a_third_objective_when_asked() -> None:
    pts = [
        point(0, 0.9, 100, latency=5.0),
        point(1, 0.8, 100, latency=1.0),
        point(2, 0.8, 120, latency=2.0),
    ]
    assert [p.trial for p in pareto_front(pts)] == [0]
    assert [p.trial for p in pareto_front(pts, with_latency=True)] == [0, 1]


def test_hypervolume_of_a_known_front() -> None:
    # reference (1, 1): one point at accuracy 0.8 and half the MACs spans 0.8 x 0.5
    assert hypervolume([point(0, 0.8, 50)], 100) == pytest.approx(0.8 * 0.5)
    two = hypervolume([point(0, 0.8, 50), point(1, 0.6, 20)], 100)
    assert two == pytest.approx(0.8 * 0.5 + 0.6 * 0.3)
    assert hypervolume([], 100) == 0.0


def test_knee_prefers_the_balanced_point() -> None:
    front = [point(0, 0.95, 100), point(1, 0.93, 40), point(2, 0.50, 10)]
    assert _knee(front).trial == 1


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_pareto(
        [*POINTS, point(5, 0.95, 120, feasible=False)],
        tmp_path / "p.png",
        baseline_macs=120,
        baseline_accuracy=0.95,
        chosen=1,
        max_macs=80,
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec.model_validate({"arch": "tiny_cnn", "budget": {"flops": 0.5}})
    assert JobSpec.model_validate(spec.to_json_dict()) == spec


def _drawn_figure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kwargs: object) -> object:
    """Plot and return the matplotlib figure instead of letting it be closed unseen."""
    from matplotlib import pyplot as plt

    drawn: list[object] = []
    close = plt.close

    def keep(fig: object) -> None:
        drawn.append(fig)
        close(fig)  # type: ignore[arg-type]

    monkeypatch.setattr(plt, "close", keep)
    path = plot_pareto(
        [*POINTS, point(5, 0.95, 120, feasible=False)],
        tmp_path / "p.png",
        baseline_macs=200,
        baseline_accuracy=0.95,
        chosen=1,
        max_macs=80,
        **kwargs,  # type: ignore[arg-type]
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return drawn[0]


def test_plot_numbers_every_trial_and_shows_the_final_accuracy_beside_the_search_time_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fig = _drawn_figure(monkeypatch, tmp_path, chosen_final_accuracy=0.88)
    (ax,) = fig.axes  # type: ignore[attr-defined]
    assert sorted(t.get_text() for t in ax.texts) == [str(t) for t in range(6)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("search-time accuracy (after the trial's short fine-tune)" in t for t in legend)
    assert "chosen trial 1: final accuracy (after the final fine-tune)" in legend
    # one unit for MACs: a share of the unpruned model, whose count the label gives
    assert ax.get_xlabel() == "MACs, % of the unpruned model (200 MACs at batch 1)"
    final = [c for c in ax.collections if c.get_label().startswith("chosen trial 1: final")]
    assert final[0].get_offsets().tolist() == [[25.0, 0.88]]  # trial 1: 50 of 200 MACs


def test_plot_without_a_final_accuracy_has_no_final_marker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fig = _drawn_figure(monkeypatch, tmp_path)
    (ax,) = fig.axes  # type: ignore[attr-defined]
    assert not any("final" in t.get_text() for t in ax.get_legend().get_texts())
