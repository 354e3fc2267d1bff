"""What the parts of ``seed_methods.py`` share: the data sets, and one trained baseline per
data set and seed (trained with the real CLI by ``_quality_baselines.ensure_baseline`` and
cached), in the order every part runs them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _quality_baselines import ensure_baseline, make_subset

__all__ = ["BASE_EPOCHS", "FASHION_ROOT", "QUICK_BASE_EPOCHS", "SHAPE", "Baseline", "baselines"]

SHAPE = (1, 16, 16)
FASHION_ROOT = "/usr/share/datasets"
BASE_EPOCHS = {"digits": 30, "fashion_mnist": 15}
QUICK_BASE_EPOCHS = {"digits": 2, "fashion_mnist": 1}


@dataclass(frozen=True)
class Baseline:
    """One seed's trained, unpruned model on one data set.

    Attributes:
        label: the data set's label in reports (``digits``, ``fashion_mnist``).
        dataset: the name :func:`models.data.load_dataset` takes.
        seed: fixes the split, so every seed has its own baseline.
        weights: the checkpoint.
        report: ``inferprune train --json``'s report (``test_accuracy``,
            ``weights_sha256`` …).
        epochs: epochs it was trained.
    """

    label: str
    dataset: str
    seed: int
    weights: Path
    report: dict[str, Any]
    epochs: int


def baselines(
    args: argparse.Namespace,
    seeds: list[int],
    base_epochs: dict[str, int],
    wait: Callable[[], None],
    *,
    arch: str,
) -> Iterator[Baseline]:
    """Yield the baseline of every data set (``digits``, then the class-balanced
    Fashion-MNIST subset of ``args.train_subset`` / ``args.test_subset`` images from
    ``args.fashion_root``) and seed, data set by data set, training the ones not in
    ``args.cache_dir``; ``wait`` is called before each (the machine's quiet file)."""
    fashion = make_subset(
        "fashion_mnist", SHAPE, args.fashion_root, args.train_subset, args.test_subset,
        args.cache_dir,
    )  # fmt: skip
    for label, dataset in (("digits", "digits"), ("fashion_mnist", fashion)):
        for seed in seeds:
            wait()
            weights, report = ensure_baseline(
                seed, base_epochs[label], args.cache_dir, arch=arch, dataset=dataset,
                input_shape=SHAPE,
            )  # fmt: skip
            yield Baseline(label, dataset, seed, weights, report, base_epochs[label])
