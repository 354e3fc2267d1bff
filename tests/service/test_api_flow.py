"""The whole flow through the API: submit → poll → trials → Pareto → download → load."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from fastapi.testclient import TestClient

from models.io import load_pruned
from service.settings import Settings
from tests.service.conftest import job_spec, run_worker, submit


def test_submit_poll_pareto_download(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    response = submit(api, job_spec(search={"trials": 3}), weights=tiny_weights)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["pretrained"] is True
    assert job["progress"] == {
        "trials_done": 0,
        "trials_total": 3,
        "fraction": 0.0,
        "eta_s": None,
        "trials_running": 0,
        "trials_failed": 0,
    }

    assert run_worker(settings) == 4  # three trials and the finalization

    job = api.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"]["fraction"] == 1.0 and job["progress"]["trials_done"] == 3
    assert job["best"]["macs"] <= 0.5 * job["baseline"]["macs"]
    for key in ("macs", "params", "latency_ms", "val_accuracy", "test_accuracy"):
        assert key in job["best"] and key in job["baseline"]

    trials = api.get(f"/v1/jobs/{job['id']}/trials").json()
    assert trials["objectives"] == ["val_accuracy"] and len(trials["items"]) == 3
    pareto = api.get(f"/v1/jobs/{job['id']}/pareto").json()
    assert pareto["points"] and pareto["best_trial"] == job["best"]["trial"]
    png = api.get(f"/v1/jobs/{job['id']}/pareto.png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"

    weights = api.get(f"/v1/jobs/{job['id']}/checkpoint")
    assert weights.status_code == 200
    model, info = load_pruned(weights.content)
    assert info.plan.to_dict()  # a pruned structure, rebuilt from the metadata
    onnx = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"format": "onnx"})
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(
            session.run(None, {"input": x.numpy()})[0], model(x).numpy(), atol=1e-4
        )
    for fmt in ("pt2", "torchscript"):
        exported = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"format": fmt})
        assert exported.status_code == 200 and len(exported.content) > 1000

    # a Pareto trial's own weights are downloadable too
    other = [p["trial"] for p in pareto["points"] if p["trial"] != job["best"]["trial"]]
    for trial in other:
        got = api.get(f"/v1/jobs/{job['id']}/checkpoint", params={"trial": trial})
        assert got.status_code == 200
        assert load_pruned(got.content)[1].plan.to_dict()


def test_jobs_list_newest_first_with_pages(api: TestClient) -> None:
    ids = [submit(api).json()["id"] for _ in range(3)]
    page = api.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] == 3 and page["next"] == "/v1/jobs?limit=2&offset=2"
    rest = api.get(page["next"]).json()
    assert [j["id"] for j in rest["items"]] == [ids[0]] and rest["next"] is None
