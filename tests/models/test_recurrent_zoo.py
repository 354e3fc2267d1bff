"""LSTM and GRU classifiers: (T, F) inputs through the zoo, cost counting and exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.cost import count_params, measure_cost, recurrent_macs
from models.errors import ModelsError
from models.io import CheckpointInfo, export_model, load_pruned, save_pruned
from models.prune import Plan
from models.zoo import RecurrentClassifier, build_model, get_architecture, normalize_shape

SHAPE = (8, 8)


@pytest.mark.parametrize("arch", ["lstm_classifier", "gru_classifier", "gru_classifier_3x128"])
def test_sequence_models_classify_batches_of_sequences(arch: str) -> None:
    model = build_model(arch, num_classes=5, input_shape=(12, 6))
    with torch.no_grad():
        out = model(torch.randn(3, 12, 6))
    assert out.shape == (3, 5)
    assert get_architecture(arch).input_rank == 2


def test_the_registered_depths_and_widths() -> None:
    def widths(name: str) -> list[int]:
        model = build_model(name)
        assert isinstance(model, RecurrentClassifier)
        return [layer.hidden_size for layer in model.layers]

    assert widths("lstm_classifier") == [64, 64]
    assert widths("lstm_classifier_1x32") == [32]
    assert widths("gru_classifier_3x128") == [128, 128, 128]
    assert widths("lstm_classifier_2x100") == [100, 100]  # any depth 1-3, width 1-4096
    assert widths("gru_classifier_3x7") == [7, 7, 7]
    assert get_architecture("gru_classifier_3x7").input_rank == 2


@pytest.mark.parametrize(
    "name", ["lstm_classifier_4x64", "gru_classifier_2x0", "gru_classifier_2x5000"]
)
def test_a_sized_name_outside_the_limits_is_unknown(name: str) -> None:
    from models.errors import UnknownArchitectureError

    with pytest.raises(UnknownArchitectureError, match=f"unknown architecture .{name}."):
        get_architecture(name)


def test_mean_readout_differs_from_last_step() -> None:
    torch.manual_seed(0)
    last = RecurrentClassifier("gru", 4, 6, [16], readout="last")
    mean = RecurrentClassifier("gru", 4, 6, [16], readout="mean")
    mean.load_state_dict(last.state_dict())
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        assert not torch.allclose(last(x), mean(x))


def test_a_shape_of_the_wrong_rank_is_refused_naming_the_expected_one() -> None:
    with pytest.raises(ModelsError, match="T,F"):
        build_model("lstm_classifier", 10, (1, 8, 8))
    with pytest.raises(ModelsError, match="C,H,W"):
        build_model("tiny_cnn", 10, (8, 8))


def test_sequence_shapes_parse_from_text() -> None:
    assert normalize_shape("28,28") == (28, 28)
    assert normalize_shape("8x8", rank=2) == (8, 8)
    with pytest.raises(ModelsError):
        normalize_shape("3,8,8", rank=2)


@pytest.mark.parametrize(("cell", "gates"), [("lstm", 4), ("gru", 3)])
def test_measured_macs_count_every_gate_step_and_layer(cell: str, gates: int) -> None:
    model = RecurrentClassifier(cell, 10, 8, [16, 24])  # type: ignore[arg-type]
    cost = measure_cost(model, (5, 8))
    recurrent = 5 * gates * (16 * (8 + 16) + 24 * (16 + 24))
    assert cost.macs == recurrent + 24 * 10
    assert cost.params == count_params(model)


def test_recurrent_macs_of_a_stacked_bidirectional_module() -> None:
    # layer 2 reads both directions of layer 1
    expected = 3 * 7 * 2 * 4 * 5 * ((6 + 5) + (10 + 5))
    assert recurrent_macs("lstm", 7, 6, 5, num_layers=2, bidirectional=True, batch=3) == expected


@pytest.mark.parametrize("arch", ["lstm_classifier", "gru_classifier"])
def test_onnx_export_of_a_sequence_model_matches_torch(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, SHAPE)
    path = tmp_path / "model.onnx"
    export_model(model, SHAPE, "onnx", path)
    session = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    for n in (1, 4):
        x = torch.randn(n, *SHAPE)
        (out,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)


def test_an_unpruned_sequence_checkpoint_round_trips(tmp_path: Path) -> None:
    model = build_model("gru_classifier_1x32", 10, SHAPE)
    path = save_pruned(
        model, tmp_path / "m.safetensors", CheckpointInfo("gru_classifier_1x32", 10, SHAPE, Plan())
    )
    loaded, info = load_pruned(path)
    assert info.input_shape == SHAPE
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
