"""Hidden-unit pruning of stacked LSTM/GRU layers: groups, surgery, cost, save, export,
schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.cost import AnalyticCost, measure_cost
from models.data import load_dataset
from models.errors import ModelsError
from models.io import CheckpointInfo, export_model, load_pruned, save_pruned
from models.prune import Plan, apply_plan, build_pruning_graph
from models.schedules import (
    ScheduleConfig,
    ScheduleContext,
    make_schedule,
    train_with_schedule,
)
from models.train import fine_tune
from models.zoo import RecurrentClassifier, build_model

SHAPE = (6, 5)


def _model(cell: str, hidden: list[int]) -> RecurrentClassifier:
    torch.manual_seed(0)
    return RecurrentClassifier(cell, 4, SHAPE[1], hidden).eval()  # type: ignore[arg-type]


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_each_recurrent_layer_is_a_group_of_its_hidden_units() -> None:
    graph = build_pruning_graph(_model("lstm", [16, 24]), SHAPE, round_to=8)
    assert [(g.name, g.channels, g.step) for g in graph.groups] == [
        ("layers.0", 16, 8),
        ("layers.1", 24, 8),
    ]
    assert graph.group("layers.0").layers == ("layers.0", "layers.1")
    assert graph.group("layers.1").layers == ("layers.1", "fc")
    assert graph.output_layer == "fc"


@pytest.mark.parametrize(("cell", "gates"), [("lstm", 4), ("gru", 3)])
def test_units_whose_gate_rows_are_zero_are_removed_without_changing_outputs(
    cell: str, gates: int
) -> None:
    model = _model(cell, [16, 16])
    dead = {"layers.0": [1, 5, 6, 9, 11, 12, 14, 15], "layers.1": [0, 2, 3, 4, 7, 8, 10, 13]}
    with torch.no_grad():
        for name, units in dead.items():
            rnn = model.get_submodule(name)
            rows = torch.tensor([g * 16 + u for g in range(gates) for u in units])
            for tensor in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                rnn.get_parameter(tensor)[rows] = 0.0  # every gate of the unit, nothing else
    x = torch.randn(3, *SHAPE)

    pruned = apply_plan(model, {"layers.0": 8, "layers.1": 8}, "l1", input_shape=SHAPE)

    torch.testing.assert_close(_out(pruned, x), _out(model, x), atol=1e-6, rtol=1e-5)
    assert isinstance(pruned, RecurrentClassifier)
    assert [layer.hidden_size for layer in pruned.layers] == [8, 8]
    assert pruned.layers[1].input_size == 8 and pruned.fc.in_features == 8
    assert _out(model, x).shape == (3, 4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_widths_are_exact_and_the_analytic_cost_is_the_measured_one(cell: str) -> None:
    model = _model(cell, [24, 32, 16])
    graph = build_pruning_graph(model, SHAPE)
    plan = {"layers.0": 8, "layers.1": 16, "layers.2": 8}

    pruned = apply_plan(model, plan, "l2", input_shape=SHAPE, graph=graph)

    assert isinstance(pruned, RecurrentClassifier)
    assert [layer.hidden_size for layer in pruned.layers] == [8, 16, 8]
    assert AnalyticCost(model, graph).predict(plan) == measure_cost(pruned, SHAPE)
    assert _out(pruned, torch.randn(2, *SHAPE)).shape == (2, 4)


def test_a_pruned_recurrent_checkpoint_loads_and_exports_to_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lstm_classifier", 4, SHAPE)  # 2 x 64, rebuilt by load_pruned
    plan = Plan({"layers.0": 24, "layers.1": 40})
    pruned = apply_plan(model, plan, "l1", input_shape=SHAPE)
    info = CheckpointInfo("lstm_classifier", 4, SHAPE, plan)
    path = save_pruned(pruned, tmp_path / "lstm.safetensors", info)

    loaded, read = load_pruned(path)

    x = torch.randn(5, *SHAPE)
    assert read.plan == plan and read.input_shape == SHAPE
    torch.testing.assert_close(_out(loaded, x), _out(pruned, x))
    onnx_path = tmp_path / "lstm.onnx"
    export_model(loaded, SHAPE, "onnx", onnx_path)
    session = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    np.testing.assert_allclose(logits, _out(pruned, x).numpy(), atol=1e-5)


def test_a_data_criterion_is_refused_naming_the_ones_that_work() -> None:
    with pytest.raises(ModelsError, match="l1, l2, random"):
        apply_plan(_model("gru", [16]), {"layers.0": 8}, "taylor", input_shape=SHAPE)


def test_random_scores_are_seeded() -> None:
    model = _model("gru", [16])
    a = apply_plan(model, {"layers.0": 8}, "random", input_shape=SHAPE, seed=3)
    b = apply_plan(model, {"layers.0": 8}, "random", input_shape=SHAPE, seed=3)
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(_out(a, x), _out(b, x))


class _TwoLayerLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 16, num_layers=2, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


def test_a_multi_layer_torch_rnn_is_refused_with_the_way_out() -> None:
    with pytest.raises(ModelsError, match="stack them as modules"):
        build_pruning_graph(_TwoLayerLSTM(), SHAPE)


def test_a_recurrent_model_needs_a_sequence_shape() -> None:
    with pytest.raises(ModelsError, match=r"\(T, F\)"):
        build_pruning_graph(_model("lstm", [16]), (1, 6, 5))


@pytest.mark.parametrize("name", ["one_shot", "iterative", "agp"])
def test_schedules_cut_hidden_units_to_the_plan_while_training(name: str) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits_seq", input_shape=(8, 8), num_classes=10)
    model = RecurrentClassifier("gru", 10, 8, [32, 32])
    graph = build_pruning_graph(model, (8, 8))
    context = ScheduleContext(
        graph=graph, train=data.train, calibration=list(data.train.batches(32, limit=2))
    )

    def trainer(m: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        fine_tune(m, data.train, steps=steps, lr=0.05, batch_size=32, start_step=start)

    out = train_with_schedule(
        model,
        Plan({"layers.0": 8, "layers.1": 16}),
        make_schedule(ScheduleConfig(name=name)),
        total_steps=12,
        criterion="l1",
        context=context,
        trainer=trainer,
    )
    assert isinstance(out.model, RecurrentClassifier)
    assert [layer.hidden_size for layer in out.model.layers] == [8, 16]
