"""Weight steps of ``--sequence`` on a recurrent model: AGP magnitude pruning of the
LSTM/GRU weights through ``apply`` (at once, and gradually over a fine-tune) and
``prune`` (every candidate, at once)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.io import export_onnx, load_pruned
from tests.service.conftest import run_cli, write_json

APPLY = ["apply", "--arch", "lstm_classifier_1x32", "--input-shape", "8,8"]
WEIGHT = {"granularity": "weight", "criterion": "l1", "amount": 0.75}
RECURRENT = ("weight_ih_l0", "weight_hh_l0")


def _zero_shares(model: torch.nn.Module) -> list[float]:
    return [
        float((p == 0).float().mean()) for n, p in model.named_parameters() if n.endswith(RECURRENT)
    ]


def test_apply_a_weight_step_at_once_shows_the_sparse_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.safetensors"
    seq = write_json(tmp_path, [WEIGHT])

    status, _, err = run_cli(capsys, *APPLY, "--sequence", seq, "-o", str(out))

    assert status == 0, err
    assert "non-zero params" in err and "effective MACs" in err
    model, info = load_pruned(out)
    assert _zero_shares(model) == [pytest.approx(0.75, abs=1e-3)] * 2
    assert not info.kernel_masks  # zeros of a dense checkpoint, no masks to pack


def test_apply_plan_then_a_gradual_weight_step_round_trips_and_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.safetensors"
    seq = write_json(tmp_path, [WEIGHT])
    data = ["--dataset", "digits_seq", "--finetune-epochs", "1"]

    status, stdout, err = run_cli(
        capsys, *APPLY, "--ratio", "0.5", "--sequence", seq, *data, "-o", str(out), "--json"
    )

    assert status == 0, err
    result = json.loads(stdout)
    assert result["plan"] == {"layers.0": 16}  # hidden units first, then the weights
    assert result["schedule"]["weights"]["method"] == "agp"
    after = result["after"]
    assert after["nonzero_params"] < after["params"]
    assert after["effective_macs"] < after["macs"]
    model, _ = load_pruned(out)
    assert model.layers[0].hidden_size == 16
    assert _zero_shares(model) == [pytest.approx(0.75, abs=1e-2)] * 2
    onnx_bytes = export_onnx(model, (8, 8))  # checked against torch
    x = torch.randn(3, 8, 8)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-5)


def test_apply_refuses_a_channel_step_after_a_gradual_weight_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = {"granularity": "channel", "criterion": "l1", "amount": 0.5}
    seq = write_json(tmp_path, [WEIGHT, channel])
    data = ["--dataset", "digits_seq", "--finetune-epochs", "1"]

    status, _, err = run_cli(capsys, *APPLY, "--sequence", seq, *data, "-o", str(tmp_path / "x"))

    assert status == 1 and "must come last" in " ".join(err.split())


def test_weight_steps_are_refused_for_an_image_model_naming_kernel_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = write_json(tmp_path, [WEIGHT])
    argv = ["apply", "--arch", "tiny_cnn", "--input-shape", "3,16,16", "--sequence", seq]

    for tuned in ([], ["--dataset", "synthetic", "--finetune-epochs", "1"]):
        status, _, err = run_cli(capsys, *argv, *tuned, "-o", str(tmp_path / "x.safetensors"))

        assert status == 1 and "LSTM/GRU" in err and "kernel steps" in err, err


PRUNE = [
    "prune",
    *APPLY[1:],
    "--dataset",
    "digits_seq",
    "--flops",
    "0.6",
    "--trials",
    "2",
    "--steps-per-trial",
    "2",
    "--final-epochs",
    "1",
]


def test_prune_sequence_weight_prunes_every_candidate_of_an_lstm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = write_json(tmp_path, [WEIGHT])

    status, stdout, err = run_cli(
        capsys, *PRUNE, "--sequence", seq, "--out", str(tmp_path / "out"), "--json"
    )

    assert status == 0, err
    best = json.loads(stdout)["best"]
    assert best["nonzero_params"] < best["params"] and best["effective_macs"] < best["macs"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    trials = [t for t in report["trials"] if t.get("params")]
    assert trials and all(t["nonzero_params"] < t["params"] for t in trials)
    model, _ = load_pruned(tmp_path / "out" / "model.safetensors")
    assert _zero_shares(model) == [pytest.approx(0.75, abs=1e-2)] * 2
