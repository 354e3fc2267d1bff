"""Fixtures for the search tests: a tiny, fast job on synthetic data."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from search import JobSpec, PruningProblem, load_problem


def tiny_spec(**overrides: Any) -> JobSpec:
    """Return a job on tiny_cnn and synthetic data whose trials take a fraction of a second."""
    data: dict[str, Any] = {
        "arch": "tiny_cnn",
        "input_shape": [3, 16, 16],
        "dataset": "synthetic",
        "budget": {"flops": 0.5},
        "search": {"trials": 6, "seed": 0},
        "finetune": {"steps_per_trial": 4, "final_epochs": 1, "lr": 0.05, "batch_size": 32},
        "pruning": {"round_to": 4},
        "latency": {"repeats": 5, "warmup": 1},
    }
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return JobSpec.model_validate(data)


def trained_checkpoint(arch: str, epochs: int) -> bytes:
    """Return ``arch`` trained ``epochs`` epochs on the synthetic set (3x16x16, seed 0),
    as checkpoint bytes."""
    from models.data import load_dataset
    from models.io import CheckpointInfo, checkpoint_bytes
    from models.prune import Plan
    from models.train import fine_tune
    from models.zoo import build_model

    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=(3, 16, 16))
    model = build_model(arch, data.num_classes, (3, 16, 16))
    fine_tune(model, data.train, epochs=epochs, lr=0.05, batch_size=32)
    norm = data.normalization
    info = CheckpointInfo(
        arch,
        data.num_classes,
        (3, 16, 16),
        Plan(),
        normalization={"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
    )
    return checkpoint_bytes(model, info)


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """tiny_cnn trained briefly on the synthetic set, as checkpoint bytes."""
    return trained_checkpoint("tiny_cnn", 3)


@pytest.fixture(scope="session")
def problem(trained_weights: bytes) -> PruningProblem:
    """The default tiny job, loaded with the trained weights."""
    return load_problem(tiny_spec(), weights=trained_weights)
