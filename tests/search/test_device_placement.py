"""A trial, a rung search and the final fine-tune recalibrate, train and evaluate only
models placed on the problem's device, and count and export only CPU models. Checked
on the CPU: ``PruningProblem.place`` is wrapped to mark what it placed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from torch import nn

import search.final
import search.objective
import search.rungs
import search.sensitivity
from search import MemoryCheckpoints, PruningProblem, conclude_search, load_problem, open_study
from search.runner import run_search
from tests.search.conftest import tiny_spec

MARK = "_placed_on_device"


def _placed_only(calls: list[str], name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def check(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        assert getattr(model, MARK, False), f"{name} got a model not placed on the device"
        calls.append(name)
        return real(model, *args, **kwargs)

    return check


def test_training_and_evaluation_see_only_placed_models(
    trained_weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec(search={"compute_epochs": 3.0, "trials": 4}, finetune={"distill": True})
    problem = load_problem(spec, weights=trained_weights, device="cpu")
    assert problem.teacher is problem.model  # on the CPU the teacher is the model itself

    def place(self: PruningProblem, model: nn.Module) -> nn.Module:
        setattr(model, MARK, True)
        return model.to(self.device)

    monkeypatch.setattr(PruningProblem, "place", place)
    teacher = copy.deepcopy(problem.model)  # a device copy, as on a GPU worker
    setattr(teacher, MARK, True)
    problem.__dict__["teacher"] = teacher
    calls: list[str] = []
    for module in (search.objective, search.rungs, search.final, search.sensitivity):
        for name in ("recalibrate_batchnorm", "fine_tune", "evaluate"):
            if hasattr(module, name):
                real = getattr(module, name)
                monkeypatch.setattr(module, name, _placed_only(calls, name, real))
    study = open_study(problem, optuna.storages.InMemoryStorage())
    checkpoints = MemoryCheckpoints()
    run_search(problem, study, trials=4, checkpoints=checkpoints)
    trials = study.get_trials(deepcopy=False)
    conclusion = conclude_search(
        problem, trials, storage="m", study_name="s", checkpoints=checkpoints
    )
    assert conclusion.status == "succeeded"
    assert {"fine_tune", "evaluate"} <= set(calls)
    # a classic trial (no rungs) recalibrates BatchNorm before its proxy evaluation
    classic = load_problem(tiny_spec(search={"trials": 2}), weights=trained_weights, device="cpu")
    run_search(classic, open_study(classic, optuna.storages.InMemoryStorage()), trials=2)
    assert "recalibrate_batchnorm" in calls
    # the delivered model comes back to the CPU for counting and export
    assert conclusion.report["best"]["macs"] > 0
