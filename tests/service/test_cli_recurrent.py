"""The CLI on a recurrent model: groups, apply, profile and ONNX export of an LSTM/GRU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.io import load_pruned
from service.cli import main


def test_groups_lists_one_group_of_hidden_units_per_layer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["groups", "--arch", "lstm_classifier", "--input-shape", "28,28", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [28, 28]
    assert [(g["name"], g["channels"]) for g in report["groups"]] == [
        ("layers.0", 64),
        ("layers.1", 64),
    ]


def test_an_image_shape_for_a_sequence_model_names_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["groups", "--arch", "gru_classifier", "--input-shape", "1,8,8"]) == 1
    err = capsys.readouterr().err
    assert "--input-shape" in err and "T,F" in err


def test_apply_then_export_a_pruned_gru_that_onnxruntime_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, onnx_path = tmp_path / "gru.safetensors", tmp_path / "gru.onnx"
    apply = ["apply", "--arch", "gru_classifier", "--input-shape", "8,8", "--ratio", "0.5"]
    assert main([*apply, "--dataset", "digits_seq", "--out", str(ckpt)]) == 0
    model, info = load_pruned(ckpt)
    assert [layer.hidden_size for layer in model.layers] == [32, 32]
    assert info.input_shape == (8, 8)

    assert main(["profile", "--pruned", str(ckpt), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["params"] > 0
    assert main(["export", str(ckpt), "--format", "onnx", "-o", str(onnx_path)]) == 0

    x = torch.randn(3, 8, 8)
    session = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-5)
