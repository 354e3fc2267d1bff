"""Service jobs on recurrent networks: a sequence model's ``input_shape: [T, F]`` goes
through the API, a worker searches its hidden-unit groups, and the delivered model
downloads as a smaller LSTM/GRU whose ONNX export gives the same outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from models.io import CheckpointInfo, checkpoint_bytes, export_onnx, load_pruned
from models.prune import Plan
from models.zoo import build_model
from service.cli import build_parser, main
from service.cli._submit import build_spec
from service.settings import Settings
from tests.service.conftest import job_spec, run_worker, submit

SHAPE = [8, 8]


def _sequence_job(**overrides: object) -> dict[str, object]:
    spec = job_spec(arch="lstm_classifier_1x32", input_shape=SHAPE, dataset="digits_seq")
    spec["search"] = {"trials": 2, "seed": 0, "sampler": "tpe"}
    return spec | overrides


@pytest.fixture(scope="module")
def lstm_weights() -> bytes:
    """lstm_classifier_1x32's initial weights as a checkpoint (the upload path reads them)."""
    torch.manual_seed(0)
    model = build_model("lstm_classifier_1x32", 10, (8, 8))
    return checkpoint_bytes(model, CheckpointInfo("lstm_classifier_1x32", 10, (8, 8), Plan()))


def test_a_sequence_job_runs_to_a_smaller_lstm_that_exports_faithfully(
    api: TestClient, settings: Settings, lstm_weights: bytes
) -> None:
    response = submit(api, _sequence_job(), weights=lstm_weights)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["spec"]["input_shape"] == SHAPE
    run_worker(settings)

    status = api.get(f"/v1/jobs/{job['id']}").json()
    assert status["status"] == "succeeded", status["error"]
    best, baseline = status["best"], status["baseline"]
    assert best["macs"] <= 0.5 * baseline["macs"]
    assert set(best["plan"]) == {"layers.0"} and best["plan"]["layers.0"] < 32

    delivered = api.get(f"/v1/jobs/{job['id']}/checkpoint")
    assert delivered.status_code == 200, delivered.text
    model, info = load_pruned(delivered.content)
    assert info.input_shape == (8, 8)
    rnn = model.get_submodule("layers.0")
    assert isinstance(rnn, torch.nn.LSTM) and rnn.hidden_size == best["plan"]["layers.0"]

    onnx = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"format": "onnx"})
    assert onnx.status_code == 200, onnx.text
    x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_sequence_job_with_compute_epochs_trains_its_survivor_on_through_rungs(
    api: TestClient, settings: Settings
) -> None:
    spec = _sequence_job(arch="gru_classifier_1x32")
    spec["search"] = {"seed": 0, "compute_epochs": 2.0}
    response = submit(api, spec)
    assert response.status_code == 202, response.text
    run_worker(settings)

    status = api.get(f"/v1/jobs/{response.json()['id']}").json()
    assert status["status"] == "succeeded", status["error"]
    stages = {record["stage"] for record in status["best"]["training_history"]}
    assert "final" in stages and any(stage.startswith("rung") for stage in stages), stages
    model, _ = load_pruned(api.get(f"/v1/jobs/{status['id']}/checkpoint").content)
    assert isinstance(model.get_submodule("layers.0"), torch.nn.GRU)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"input_shape": [1, 8, 8]}, "lstm_classifier_1x32 reads sequences: give input_shape"),
        ({"dataset": "digits"}, "use digits_seq"),
        ({"latency": {"predictor": "table"}}, "latency.predictor"),
        ({"pruning": {"criterion": "taylor"}}, "use l1, l2, random"),
    ],
)
def test_the_api_says_what_a_sequence_job_needs(
    api: TestClient, overrides: dict[str, object], says: str
) -> None:
    response = submit(api, _sequence_job(**overrides))
    assert response.status_code == 422, response.text
    assert says in response.json()["error"]["message"]


def test_an_onnx_lstm_is_refused_with_what_to_do_instead(api: TestClient) -> None:
    onnx = export_onnx(build_model("lstm_classifier_1x32", 10, (8, 8)), (8, 8))
    spec = _sequence_job()
    for key in ("arch", "input_shape"):
        del spec[key]
    response = api.post(
        "/v1/jobs",
        data={"spec": json.dumps(spec)},
        files={"model": ("lstm.onnx", io.BytesIO(onnx), "application/octet-stream")},
    )
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["error"]["message"]
    assert "recurrent network (LSTM operators)" in message and "lstm_classifier" in message


@pytest.mark.parametrize(
    ("arch", "cell", "schedule"),
    [
        ("lstm_classifier", "LSTM", []),
        ("gru_classifier", "GRU", ["--schedule", "agp"]),
        ("lstm_classifier", "LSTM", ["--schedule", "iterative", "--criteria", "l2,l1"]),
        ("gru_classifier", "GRU", ["--schedule", "adaptive", "--max-accuracy-drop", "0.05"]),
    ],
)
def test_prune_searches_a_recurrent_model_and_delivers_a_matching_onnx(
    arch: str, cell: str, schedule: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["prune", "--arch", arch, "--dataset", "digits_seq", "--input-shape", "8,8"]
    argv += ["--flops", "0.5", "--trials", "3", "--sampler", "tpe", "--steps-per-trial", "2"]
    argv += ["--final-epochs", "0.3", *schedule, "--out", str(out), "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    best = report["best"]
    assert best["macs"] <= 0.5 * report["baseline"]["macs"]
    assert set(best["plan"]) == {"layers.0", "layers.1"}
    assert best["schedule"]["name"] == (schedule[1] if schedule else "one_shot")

    model, info = load_pruned(out / "model.safetensors")
    assert info.input_shape == (8, 8)
    widths = [layer.hidden_size for layer in model.layers]
    assert widths == [best["plan"]["layers.0"], best["plan"]["layers.1"]]  # the plan exactly
    assert all(type(layer).__name__ == cell for layer in model.layers)
    x = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    onnx = (out / "model.onnx").read_bytes()
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), atol=1e-4)


def test_prune_names_the_flag_of_a_wrong_rank_and_submit_parses_t_f(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prune", "--arch", "gru_classifier_1x32", "--dataset", "digits_seq"]
    argv += ["--input-shape", "1,8,8", "--flops", "0.5", "--trials", "1"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--input-shape: gru_classifier_1x32 reads sequences" in err and "[8, 8]" in err

    args = build_parser().parse_args(["submit", "--arch", "gru_classifier", "--input-shape", "8,8"])
    assert build_spec(args)["input_shape"] == [8, 8]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "--arch", "gru_classifier", "--input-shape", "8"])
    assert "--input-shape" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("x", "says"),
    [
        (np.zeros((40, 1, 8, 8), np.float32), "images; a sequence model reads"),
        (np.zeros((40, 6, 8), np.float32), "set input_shape [6, 8] (--input-shape 6,8)"),
    ],
)
def test_an_uploaded_npz_that_is_not_the_model_s_sequences_is_refused_at_once(
    api: TestClient, lstm_weights: bytes, x: np.ndarray, says: str
) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x, y_train=np.arange(len(x)) % 2)
    spec = _sequence_job(dataset="upload")

    response = submit(api, spec, weights=lstm_weights, dataset=("data.npz", buffer.getvalue()))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_dataset" and says in error["message"]
