"""Shared test configuration: deterministic torch, quiet third-party warnings."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("INFERPRUNE_DATA_ROOT", "/nonexistent-inferprune-data")
# Tiny models gain nothing from intra-op parallelism, and two threads on a busy two-core
# machine spin against each other: one thread keeps test times stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_pruning")
