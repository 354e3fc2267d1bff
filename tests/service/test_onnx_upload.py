"""ONNX in, ONNX out through the service: a user's own CNN exported to ONNX, uploaded
as `model`, pruned by a worker, downloaded as ONNX that runs in onnxruntime with the
planned MACs; bad ONNX files refused with a clear 422."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from models.cost import measure_cost
from models.data import load_dataset
from models.io import import_onnx, onnx_model_bytes, unfold_batchnorm
from models.train import fine_tune
from service.settings import Settings
from tests.search.test_user_model import TwoBranchNet
from tests.service.conftest import job_spec, run_worker

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def user_onnx() -> bytes:
    return user_model_onnx()


def user_model_onnx() -> bytes:
    """The user's own CNN (not in the zoo), trained briefly, exported to ONNX."""
    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=SHAPE)
    model = TwoBranchNet(data.num_classes)
    fine_tune(model, data.train, epochs=2, lr=0.05, batch_size=32)
    return onnx_model_bytes(model.eval(), SHAPE)


def _spec(**overrides: Any) -> dict[str, Any]:
    spec = job_spec(**overrides)
    spec.pop("arch")
    spec.pop("input_shape")  # the model's own
    return spec


def _post(api: TestClient, spec: dict[str, Any], **files: bytes) -> Any:
    kind = "application/octet-stream"
    parts = {name: (f"{name}.bin", data, kind) for name, data in files.items()}
    return api.post("/v1/jobs", data={"spec": json.dumps(spec)}, files=parts or None)


def test_an_uploaded_onnx_model_is_pruned_and_delivered_as_onnx(
    api: TestClient, settings: Settings, user_onnx: bytes
) -> None:
    response = _post(api, _spec(), model=user_onnx)
    assert response.status_code == 202, response.text
    job = response.json()
    assert run_worker(settings) >= 4
    job = api.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["best"]["macs"] <= 0.5 * job["baseline"]["macs"]
    onnx = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"format": "onnx"})
    assert onnx.status_code == 200
    # it runs without inferprune, and its MACs are the delivered model's
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (2, 10)
    # (its export folded the BatchNorms back into the convolutions; counted as the job
    # counts them, with them unfolded)
    delivered = import_onnx(onnx.content).model
    unfold_batchnorm(delivered, load_dataset("synthetic", input_shape=SHAPE).train.batches(32))
    assert measure_cost(delivered, SHAPE).macs == job["best"]["macs"]
    # formats that need a zoo architecture say so
    pt2 = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"format": "pt2"})
    assert pt2.status_code == 422 and "?format=onnx" in pt2.json()["error"]["message"]


def _bad_graph(op: str, weight: TensorProto | None = None) -> bytes:
    weight = weight or numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 14, 14])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_bad_onnx_uploads_are_refused_with_what_is_wrong(api: TestClient, user_onnx: bytes) -> None:
    # a weight declared with 60 M values (its data never read: the dims say it all)
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3, 5_000_000, 1])
    cases = [
        (_spec(), {"model": _bad_graph("Erf")}, "invalid_model", "unsupported ONNX operators: Erf"),
        (_spec(), {"model": b"\x00garbage"}, "invalid_model", "not a valid ONNX model"),
        (_spec(), {"model": _bad_graph("Relu", huge)}, "invalid_model", "60,000,000 values"),
        (job_spec(), {"model": user_onnx}, "invalid_spec", "arch: leave it out"),
        (_spec(), {"model": user_onnx, "weights": b"x"}, "invalid_spec", "not both"),
        (_spec() | {"input_shape": [3, 32, 32]}, {"model": user_onnx}, "invalid_spec", "takes"),
        (_spec(), {}, "invalid_spec", "arch: name a zoo architecture"),
    ]
    for spec, files, code, words in cases:
        response = _post(api, spec, **files)
        assert response.status_code == 422, (words, response.text)
        error = response.json()["error"]
        assert error["code"] == code and words in error["message"], error
    assert api.get("/v1/jobs").json()["items"] == []  # nothing stored
