"""Service jobs on recurrent networks with a weight step: every candidate's LSTM/GRU
weights are magnitude pruned, trials and rungs keep the zeros, and the delivered model
downloads (and exports) with its matrices at the step's sparsity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from models.io import load_pruned
from models.prune import recurrent_weights
from service.settings import Settings
from tests.service.conftest import job_spec, run_worker, submit

WEIGHT = {"granularity": "weight", "criterion": "l1", "amount": 0.75}


def _job(arch: str, **overrides: object) -> dict[str, object]:
    spec = job_spec(arch=arch, input_shape=[8, 8], dataset="digits_seq")
    spec["search"] = {"trials": 2, "seed": 0, "sampler": "tpe"}
    spec["pruning"] = {"sequence": [WEIGHT]}
    return spec | overrides


def _shares(model: torch.nn.Module) -> list[float]:
    return [float((w == 0).float().mean()) for w in recurrent_weights(model).values()]


def test_a_weight_step_job_delivers_a_sparse_lstm_that_exports_faithfully(
    api: TestClient, settings: Settings
) -> None:
    job = submit(api, _job("lstm_classifier_1x32"))
    assert job.status_code == 202, job.text
    run_worker(settings)

    status = api.get(f"/v1/jobs/{job.json()['id']}").json()
    assert status["status"] == "succeeded", status["error"]
    best = status["best"]
    assert best["nonzero_params"] < best["params"] and best["effective_macs"] < best["macs"]
    trials = api.get(f"/v1/jobs/{job.json()['id']}/trials").json()["items"]
    measured = [t for t in trials if t["macs"] is not None]
    assert measured and all(t["nonzero_params"] < t["params"] for t in measured)

    delivered = api.get(f"/v1/jobs/{job.json()['id']}/checkpoint")
    assert delivered.status_code == 200, delivered.text
    model, _ = load_pruned(delivered.content)
    assert _shares(model) == [pytest.approx(0.75, abs=1e-2)] * 2
    onnx = api.get(f"/v1/jobs/{job.json()['id']}/checkpoint", params={"format": "onnx"})
    assert onnx.status_code == 200, onnx.text
    x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), atol=1e-4)


def test_a_weight_step_rung_job_keeps_the_zeros_through_its_rungs(
    api: TestClient, settings: Settings
) -> None:
    spec = _job("gru_classifier_1x32")
    spec["search"] = {"seed": 0, "compute_epochs": 2.0}
    job = submit(api, spec)
    assert job.status_code == 202, job.text
    run_worker(settings)

    status = api.get(f"/v1/jobs/{job.json()['id']}").json()
    assert status["status"] == "succeeded", status["error"]
    delivered = api.get(f"/v1/jobs/{job.json()['id']}/checkpoint")
    model, _ = load_pruned(delivered.content)
    assert _shares(model) == [pytest.approx(0.75, abs=1e-2)] * 2


@pytest.mark.parametrize(
    ("arch", "shape", "dataset", "step", "says"),
    [
        ("lstm_classifier_1x32", [8, 8], "digits_seq", "kernel", "use weight steps"),
        ("tiny_cnn", [3, 16, 16], "synthetic", "weight", "use kernel steps"),
    ],
)
def test_the_api_refuses_a_step_the_model_has_no_weights_for(
    api: TestClient, arch: str, shape: list[int], dataset: str, step: str, says: str
) -> None:
    spec = job_spec(arch=arch, input_shape=shape, dataset=dataset)
    spec["pruning"] = {"sequence": [{"granularity": step, "criterion": "l1", "amount": 0.5}]}
    response = submit(api, spec)
    assert response.status_code == 422, response.text
    assert says in response.text
