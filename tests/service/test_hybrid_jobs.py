"""Service jobs with a hybrid sequence: trial checkpoints, rung checkpoints kept in the
artifact store and the delivered model all keep the kernels the sequence removed."""

from __future__ import annotations

import torch
from fastapi.testclient import TestClient

from models.io import load_pruned
from models.prune import zeroed_kernel_masks
from service.settings import Settings
from tests.service.conftest import job_spec, run_worker, submit

KERNEL_HALF = {"granularity": "kernel", "criterion": "l1", "amount": 0.5}


def _check_masked(data: bytes) -> dict[str, float]:
    model, info = load_pruned(data)
    assert info.kernel_masks, "the checkpoint records the removed kernels"
    assert zeroed_kernel_masks(model) == info.kernel_masks  # zeros exactly where masked
    return {name: info.kernel_masks.kept_share(name) for name in info.kernel_masks}


def test_a_hybrid_job_keeps_the_removed_kernels_in_every_file_it_serves(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    spec = job_spec(objective="pareto", budget={"flops": None}, pruning={"sequence": [KERNEL_HALF]})
    del spec["latency"]
    job = submit(api, spec, weights=tiny_weights).json()["id"]
    run_worker(settings)

    assert api.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"
    trials = api.get(f"/v1/jobs/{job}/trials").json()["items"]
    measured = [t for t in trials if t["macs"] is not None]
    assert measured and all(t["nonzero_params"] < t["params"] for t in measured)
    assert all(t["effective_macs"] < t["macs"] for t in measured)
    kept = [t["number"] for t in trials if t["has_checkpoint"]]
    assert kept
    for number in kept:  # a front trial's weights download as a kernel-pruned model
        response = api.get(f"/v1/jobs/{job}/checkpoint", params={"trial": number})
        assert response.status_code == 200, response.text
        shares = _check_masked(response.content)
        assert all(0.3 <= share <= 0.7 for share in shares.values()), shares
    delivered = api.get(f"/v1/jobs/{job}/checkpoint")
    assert delivered.status_code == 200, delivered.text
    _check_masked(delivered.content)


def test_a_hybrid_rung_job_continues_its_candidates_with_their_kernels_removed(
    api: TestClient, settings: Settings, tiny_weights: bytes
) -> None:
    spec = job_spec(search={"seed": 0, "compute_epochs": 3.0}, pruning={"sequence": [KERNEL_HALF]})
    del spec["search"]["trials"]  # compute_epochs decides
    job = submit(api, spec, weights=tiny_weights).json()["id"]
    run_worker(settings)

    status = api.get(f"/v1/jobs/{job}").json()
    assert status["status"] == "succeeded", status
    best = status["best"]
    assert best["nonzero_params"] < best["params"] and best["effective_macs"] < best["macs"]
    stages = {record["stage"] for record in best["training_history"]}
    assert "final" in stages and any(s.startswith("rung") for s in stages)  # it continued
    model, _ = load_pruned(api.get(f"/v1/jobs/{job}/checkpoint").content)
    masks = zeroed_kernel_masks(model)
    assert masks and all(0.3 <= masks.kept_share(name) <= 0.7 for name in masks)
    x = torch.randn(2, 3, 16, 16)
    assert torch.isfinite(model(x)).all()
