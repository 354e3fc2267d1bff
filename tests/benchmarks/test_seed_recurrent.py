"""seed_methods part (c): matched budgets, honest counts, the quiet window, a smoke run."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _seed_recurrent as part  # noqa: E402
import _seed_recurrent_budget as budget  # noqa: E402
from _seed_recurrent_report import markdown  # noqa: E402

from models.cost import count_params  # noqa: E402
from models.prune import apply_plan, build_pruning_graph, magnitude_masks  # noqa: E402
from models.zoo import build_model  # noqa: E402

SHAPE = (8, 8)


@pytest.mark.parametrize("arch", ["lstm_classifier", "gru_classifier"])
def test_unit_widths_are_the_widest_near_uniform_plan_within_the_budget(arch: str) -> None:
    model = build_model(arch, 10, SHAPE)
    graph = build_pruning_graph(model, SHAPE, round_to=1)
    target = int(0.2 * count_params(model))
    plan = budget.unit_widths(model, graph, target)
    widths = [plan.width(g) for g in graph.groups]
    assert max(widths) - min(widths) <= 1
    params = count_params(apply_plan(model, plan, input_shape=SHAPE, graph=graph))
    assert params <= target
    for group in graph.groups:  # one unit more anywhere would break the budget
        wider = dict(plan) | {group.name: plan.width(group) + 1}
        if max(wider.values()) - min(wider.values()) <= 1:
            pruned = apply_plan(model, wider, input_shape=SHAPE, graph=graph)
            assert count_params(pruned) > target


def test_weight_sparsity_is_the_smallest_that_fits_the_non_zero_budget() -> None:
    model = build_model("lstm_classifier", 10, SHAPE)
    target = int(0.1 * count_params(model))
    sparsity = budget.weight_sparsity(model, target)

    def nonzero_at(s: float) -> int:
        masked = build_model("lstm_classifier", 10, SHAPE)
        masked.load_state_dict(model.state_dict())
        magnitude_masks(masked, s).apply(masked)
        return budget.recurrent_sparse_cost(masked, SHAPE)["nonzero_params"]

    assert target - 4 <= nonzero_at(sparsity) <= target
    assert nonzero_at(sparsity - 1e-3) > target
    with pytest.raises(ValueError):
        budget.weight_sparsity(model, 10)  # biases and the head alone hold more


def test_zero_recurrent_weights_lower_non_zeros_and_effective_macs_not_dense_counts() -> None:
    model = build_model("gru_classifier", 10, SHAPE)
    dense = budget.recurrent_sparse_cost(model, SHAPE)
    assert dense["nonzero_params"] == dense["params"]
    assert dense["effective_macs"] == dense["macs"]
    masks = magnitude_masks(model, 0.5)
    masks.apply(model)
    removed = sum(int((~m).sum()) for m in masks.masks.values())
    sparse = budget.recurrent_sparse_cost(model, SHAPE)
    assert (sparse["params"], sparse["macs"]) == (dense["params"], dense["macs"])
    assert sparse["nonzero_params"] == dense["params"] - removed
    assert sparse["effective_macs"] == dense["macs"] - SHAPE[0] * removed


def test_quiet_window_waits_for_another_holder_and_always_removes_its_file(
    tmp_path: Path,
) -> None:
    quiet = tmp_path / "quiet"
    quiet.touch()  # someone else is timing
    threading.Timer(0.3, quiet.unlink).start()
    started = time.monotonic()
    with pytest.raises(RuntimeError), part.quiet_window(quiet, poll_s=0.05):
        assert quiet.exists()
        assert time.monotonic() - started >= 0.25
        raise RuntimeError("a measurement failed")
    assert not quiet.exists()


@pytest.mark.slow
def test_quick_run_on_digits_reports_matched_budgets_and_renders(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    part.add_arguments(parser)
    args = parser.parse_args(
        ["--rnn-datasets", "digits_seq", "--rnn-archs", "gru_classifier", "--reductions",
         "0.8", "--cache-dir", str(tmp_path), "--quiet-file", str(tmp_path / "quiet")]
    )  # fmt: skip
    args.quick = True
    torch.set_num_threads(1)
    report = part.run(args, lambda: None)

    (cell,) = report["cells"].values()
    (seed,) = cell["seeds"]
    base = seed["baseline"]
    runs = {r["method"]: r for r in seed["runs"]}
    assert set(runs) == set(part.METHODS)
    for method, run in runs.items():
        assert run["nonzero_params"] <= run["target_params"] <= 0.2 * base["params"]
        assert run["latency_ms"]["p10"] <= run["latency_ms"]["median"] <= run["latency_ms"]["p90"]
        if method == "weights agp":  # dense shapes, zeros inside
            assert run["params"] == base["params"]
            assert run["effective_macs"] < run["macs"] == base["macs"]
        else:  # physically smaller
            assert run["params"] == run["nonzero_params"] < 0.2 * base["params"]
            assert run["macs"] < 0.3 * base["macs"]
    assert not (tmp_path / "quiet").exists()
    text = markdown(report)
    assert "| 80 % | weights agp |" in text and "| 80 % | units agp |" in text
    assert "What the figures show" in text

    args.resume = True  # an interrupted run picks up the cells it saved
    again = part.run(args, lambda: None)
    assert again["cells"] == report["cells"]
