"""search_quality.py's unpruned baselines: trained with the real CLI, cached outside git,
known by their tensors; the class-balanced subsets they train on."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _quality_settings import ARCH, DATASET, INPUT_SHAPE
from safetensors import safe_open

from models.data import load_dataset

logger = logging.getLogger("benchmarks.search_quality")


def _slug(dataset: str) -> str:
    """Return a file-name-safe name of a data set (``npz:/x/fmnist.npz`` → ``fmnist``)."""
    kind, _, arg = dataset.partition(":")
    return Path(arg).stem if arg else kind


def ensure_baseline(
    seed: int,
    epochs: int,
    cache_dir: Path,
    *,
    arch: str = ARCH,
    dataset: str = DATASET,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    data_root: str | None = None,
    device: str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Return the trained baseline of ``seed`` and the CLI's report, training it if needed.

    The CLI (``inferprune train --json``) runs in a subprocess with one thread; the
    checkpoint and its report are cached in ``cache_dir``. The seed fixes the
    train/val/test split, so every seed has its own baseline: a model trained on one
    seed's split has seen another seed's test images.
    """
    shape = "x".join(map(str, input_shape))
    stem = f"{arch}-{_slug(dataset)}-{shape}-e{epochs}-s{seed}"
    if (arch, dataset, input_shape) == (ARCH, DATASET, INPUT_SHAPE):
        stem = f"{ARCH}-{DATASET}-e{epochs}-s{seed}"  # the name earlier runs cached under
    weights, report = cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"
    if weights.exists() and report.exists():
        cached: dict[str, Any] = json.loads(report.read_text())
        cached.setdefault("weights_sha256", hashlib.sha256(weights.read_bytes()).hexdigest())
        cached.setdefault("tensors_sha256", tensors_sha256(weights))
        return weights, cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("training the baseline on %s: seed %d, %d epochs", dataset, seed, epochs)
    command = [
        str(Path(sys.executable).with_name("inferprune")),
        "train",
        "--arch",
        arch,
        "--dataset",
        dataset,
        "--input-shape",
        ",".join(map(str, input_shape)),
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "-o",
        str(weights),
        "--device",
        device,
        "--json",
    ]
    if data_root is not None:
        command += ["--data-root", data_root]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    data["command"] = " ".join(command)
    data["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    data["tensors_sha256"] = tensors_sha256(weights)
    report.write_text(json.dumps(data, indent=1))
    return weights, data


def tensors_sha256(path: Path) -> str:
    """Return the SHA-256 of a safetensors file's tensors (names, dtypes, shapes, bytes,
    in name order): the weights' identity. The file's own hash is not one: safetensors
    writes its metadata in hash-map order, which changes from process to process, so
    the same weights saved twice differ in their bytes."""
    digest = hashlib.sha256()
    with safe_open(str(path), "pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def add_resnet56_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments that name a baseline of issue 11's proof (architecture, data,
    subset, baseline epochs, channel step, cache), defaulting to its configuration:
    resnet56_cifar on a 12,000/10,000-image Fashion-MNIST subset, 15 epochs."""
    parser.add_argument("--arch", default="resnet56_cifar", help="a CIFAR ResNet of the zoo")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-root", default="/usr/share/datasets")
    parser.add_argument(
        "--input-shape",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=(1, 28, 28),
        help="C,H,W the model is built for",
    )
    parser.add_argument("--train-subset", type=int, default=12000)
    parser.add_argument("--test-subset", type=int, default=10000)
    parser.add_argument("--base-epochs", type=int, default=15)
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "inferprune-bench",
        help="search_quality.py's baselines and data subsets (trained and written if missing)",
    )


def subset_of(args: argparse.Namespace) -> str:
    """Return the data set name of the subset ``add_resnet56_arguments`` describes
    (written to the cache on first use)."""
    return make_subset(
        args.dataset,
        args.input_shape,
        args.data_root,
        args.train_subset,
        args.test_subset,
        args.cache_dir,
    )


def baseline_of(args: argparse.Namespace, seed: int, dataset: str) -> tuple[Path, dict[str, Any]]:
    """Return :func:`ensure_baseline` of ``seed`` on ``dataset`` for the architecture,
    input shape, data root, baseline epochs, cache and device (CPU if not given) that
    ``args`` name."""
    return ensure_baseline(
        seed,
        args.base_epochs,
        args.cache_dir,
        arch=args.arch,
        dataset=dataset,
        input_shape=args.input_shape,
        data_root=args.data_root,
        device=getattr(args, "device", "cpu"),
    )


def make_subset(
    dataset: str,
    input_shape: tuple[int, int, int],
    data_root: str | None,
    train: int,
    test: int,
    cache_dir: Path,
) -> str:
    """Write a class-balanced subset of ``dataset`` as an ``.npz`` data set; return its name.

    ``train`` images are drawn from the data set's training part (train + val splits)
    and ``test`` from its test split, the same number per class, with a fixed seed; the
    searches then split the training images into train and val as they do any upload.
    Returns ``npz:<path>``, usable wherever a data set name is.
    """
    path = cache_dir / f"{_slug(dataset)}-train{train}-test{test}.npz"
    if not path.exists():
        splits = load_dataset(dataset, input_shape=input_shape, root=data_root, seed=0)
        rng = np.random.default_rng(0)

        def pick(parts: Sequence[Any], count: int) -> tuple[np.ndarray, np.ndarray]:
            images = np.concatenate([p.images.numpy() for p in parts])
            labels = np.concatenate([p.labels.numpy() for p in parts])
            per_class = count // splits.num_classes
            chosen = np.concatenate(
                [
                    rng.permutation(np.flatnonzero(labels == c))[:per_class]
                    for c in range(splits.num_classes)
                ]
            )
            return images[chosen], labels[chosen]

        x_train, y_train = pick([splits.train, splits.val], train)
        x_test, y_test = pick([splits.test], test)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # atomically: runs started in parallel (one per seed) may write it at once
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        tmp.replace(path)
        logger.info("wrote %s: %d train, %d test images", path, len(y_train), len(y_test))
    return f"npz:{path}"


def same_baseline(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Return whether two reports' baselines of a seed are the same weights: the SHA-256
    of their tensors when both recorded it (:func:`tensors_sha256`), else equal file
    hashes, else the accuracies their training reported on the val and test splits
    (equal weights give equal ones; a file hash alone proves nothing either way, see
    :func:`tensors_sha256`)."""
    ta, tb = a.get("train", {}), b.get("train", {})
    if ta.get("tensors_sha256") and tb.get("tensors_sha256"):
        return bool(ta["tensors_sha256"] == tb["tensors_sha256"])
    if ta.get("weights_sha256") and ta.get("weights_sha256") == tb.get("weights_sha256"):
        return True
    keys = ("val_accuracy", "test_accuracy")
    return all(ta.get(k) is not None and ta.get(k) == tb.get(k) for k in keys)
