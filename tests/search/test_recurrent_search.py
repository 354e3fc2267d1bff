"""The search on a recurrent network's hidden-unit groups: a problem loaded from a
sequence spec, its warm starts (uniform, global magnitude, sensitivity), the latency
table refused, and ``prune_module`` on a user's own LSTM module."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.cost import measure_cost
from models.data import load_dataset
from models.prune import global_magnitude_widths
from search import SpecError, prune_module
from search.latency_table import build_latency_table
from search.loading import load_problem
from search.problem import PruningProblem, build_candidate
from search.sensitivity import scan_sensitivity
from search.spec import JobSpec
from search.warm_start import warm_start_plans


def _spec(**overrides: object) -> JobSpec:
    data: dict[str, object] = {
        "arch": "lstm_classifier",
        "input_shape": [8, 8],
        "dataset": "digits_seq",
        "budget": {"flops": 0.4},
        "search": {"seed": 0, "compute_epochs": 2.0},
    }
    return JobSpec.model_validate(data | overrides)


@pytest.fixture(scope="module")
def problem() -> PruningProblem:
    return load_problem(_spec(), device="cpu")


def test_a_sequence_spec_loads_a_problem_of_hidden_unit_groups(problem: PruningProblem) -> None:
    assert problem.input_shape == (8, 8)
    assert [(g.name, g.channels) for g in problem.graph.groups] == [
        ("layers.0", 64),
        ("layers.1", 64),
    ]
    inputs, _ = next(iter(problem.data.train.batches(4)))
    assert tuple(inputs.shape) == (4, 8, 8)  # batches of (B, T, F) sequences


def test_every_warm_start_of_a_recurrent_problem_meets_its_budget(
    problem: PruningProblem,
) -> None:
    scan = scan_sensitivity(problem)
    assert [g.name for g in scan.groups] == ["layers.0", "layers.1"]
    plans = dict(warm_start_plans(problem, scan))
    assert set(plans) == {"uniform", "global", "sensitivity"}
    for kind, plan in plans.items():
        assert problem.space.fits(plan), kind
        macs = measure_cost(build_candidate(problem, plan), (8, 8)).macs  # counted for real
        assert problem.budget.max_macs is not None and macs <= problem.budget.max_macs, kind


def test_global_magnitude_widths_cut_the_weakest_units_of_all_layers_together(
    problem: PruningProblem,
) -> None:
    model = copy.deepcopy(problem.model)
    first = model.get_submodule("layers.0")
    weak = torch.cat([gate * 64 + torch.arange(32) for gate in range(4)])  # 32 units' rows
    with torch.no_grad():
        for tensor in first.parameters():
            tensor[weak] *= 1e-3
    # a quarter of all 128 units go: exactly the 32 weak ones, all in layer 0
    plan = global_magnitude_widths(model, problem.graph, 0.25)
    assert plan.to_dict() == {"layers.0": 32, "layers.1": 64}
    # at 0.3, 38 units go: the 32 weak ones and 6 more, each layer rounded down to 8
    plan = global_magnitude_widths(model, problem.graph, 0.3)
    assert plan.width(problem.graph.groups[0]) == 32
    assert plan.width(problem.graph.groups[1]) in (56, 64)
    assert global_magnitude_widths(model, problem.graph, 0.0).to_dict() == {
        "layers.0": 64,
        "layers.1": 64,
    }


def test_the_latency_table_refuses_a_recurrent_model(problem: PruningProblem) -> None:
    with pytest.raises(SpecError, match="latency.predictor") as info:
        build_latency_table(
            problem.model, problem.graph, problem.latency_meter, problem.spec.latency, seed=0
        )
    assert info.value.fields == ("latency.predictor",)
    assert "LSTM" in str(info.value)


class SpeechNet(nn.Module):
    """A user's own keyword-spotting model: two stacked LSTMs and a linear head."""

    def __init__(self, features: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, 32, batch_first=True)
        self.decoder = nn.LSTM(32, 24, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.encoder(x)
        x, _ = self.decoder(x)
        return self.head(x[:, -1])


def _loader(split: object) -> DataLoader:
    inputs, labels = zip(*split.batches(600), strict=True)  # type: ignore[attr-defined]
    return DataLoader(TensorDataset(torch.cat(inputs), torch.cat(labels)), batch_size=50)


def test_prune_module_searches_a_users_own_lstm_from_a_t_f_example() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits_seq", input_shape=(8, 8))
    model = SpeechNet()
    result = prune_module(
        model,
        torch.zeros(1, 8, 8),  # (1, T, F): one sequence, not a one-channel image
        train=_loader(data.train),
        val=_loader(data.val),
        budget={"flops": 0.5},
        trials=2,
        settings={"finetune": {"steps_per_trial": 2, "final_epochs": 0.2}},
    )
    assert isinstance(result.model, SpeechNet)
    assert result.model.encoder.hidden_size < 32 or result.model.decoder.hidden_size < 24
    assert measure_cost(result.model, (8, 8)).macs <= 0.5 * measure_cost(model, (8, 8)).macs
    x = torch.randn(3, 8, 8)
    session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, result.model(x).numpy(), atol=1e-4)


def test_prune_module_says_which_shape_a_recurrent_example_needs() -> None:
    with pytest.raises(SpecError, match=r"give one sequence, \(T, F\) or \(1, T, F\)"):
        prune_module(SpeechNet(), torch.zeros(1, 1, 8, 8), train=[], val=[], trials=1)
