"""Data set names → loaders: ``load_dataset`` and ``inspect_dataset``."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.data import _cifar, _digits, _idx, _imagefolder, _npz, _synthetic
from models.data._root import resolve_data_root
from models.data._sequences import as_sequences, image_shape_of
from models.data._source import DatasetInfo, InputShape, RawData
from models.data._split import DataSplits
from models.data._splitting import build_splits
from models.errors import DataError
from models.names import DATASET_NAMES

__all__ = ["DATASETS", "describe_datasets", "inspect_dataset", "load_dataset"]


@dataclass(frozen=True)
class _Source:
    """How to load and inspect one kind of data set, given the text after ``name:``."""

    usage: str
    description: str
    load: Callable[[str, Path, InputShape], RawData]
    inspect: Callable[[str, Path], DatasetInfo]
    input_ranks: tuple[int, ...] = (3,)
    """Input ranks it feeds: 3 for images (C, H, W), 2 for sequences (T, F)."""


_SOURCES: dict[str, _Source] = {
    "digits": _Source(
        "digits",
        "scikit-learn's real handwritten digits: 1,797 grey 8x8 images, 10 classes; offline",
        _digits.load_digits,
        _digits.inspect_digits,
    ),
    "synthetic": _Source(
        "synthetic[:classes=10,samples=600,size=16,channels=3,noise=0.15,seed=0]",
        "seeded stripe textures a tiny CNN learns in a couple of epochs; for tests",
        _synthetic.load_synthetic,
        _synthetic.inspect_synthetic,
    ),
    "cifar10": _Source(
        "cifar10",
        "CIFAR-10 from the data root (binary or python version): 60,000 32x32 colour, 10 classes",
        _cifar.load_cifar10,
        _cifar.inspect_cifar10,
    ),
    "cifar100": _Source(
        "cifar100",
        "CIFAR-100 from the data root, fine labels: 60,000 32x32 colour, 100 classes",
        _cifar.load_cifar100,
        _cifar.inspect_cifar100,
    ),
    "mnist": _Source(
        "mnist",
        "MNIST from the data root (MNIST/raw IDX files): 70,000 28x28 grey, 10 classes",
        _idx.load_mnist,
        _idx.inspect_mnist,
    ),
    "fashion_mnist": _Source(
        "fashion_mnist",
        "Fashion-MNIST from the data root (FashionMNIST/raw): 70,000 28x28 grey, 10 classes",
        _idx.load_fashion_mnist,
        _idx.inspect_fashion_mnist,
    ),
    "digits_seq": _Source(
        "digits_seq",
        "the digits read row by row: 1,797 sequences of 8 steps x 8 features, 10 classes",
        _digits.load_digits,
        _digits.inspect_digits,
        input_ranks=(2,),
    ),
    "fashion_mnist_seq": _Source(
        "fashion_mnist_seq",
        "Fashion-MNIST read row by row from the data root: 28 steps x 28 features",
        _idx.load_fashion_mnist,
        _idx.inspect_fashion_mnist,
        input_ranks=(2,),
    ),
    "imagefolder": _Source(
        "imagefolder:<dir>",
        "a folder with one sub-folder of images per class (PNG, JPEG, ...)",
        _imagefolder.load_imagefolder,
        _imagefolder.inspect_imagefolder,
    ),
    "npz": _Source(
        "<file>.npz or npz:<file>",
        "arrays x_train, y_train and optionally x_val, y_val, x_test, y_test; never unpickled",
        _npz.load_npz,
        _npz.inspect_npz,
        input_ranks=(2, 3),
    ),
}
_NEEDS_PATH = ("imagefolder", "npz")

DATASETS: tuple[str, ...] = DATASET_NAMES
"""The built-in data set names (defined in :mod:`models.names`); ``imagefolder:<dir>``
and ``.npz`` files come on top."""
if set(DATASETS) | set(_NEEDS_PATH) != set(_SOURCES):  # pragma: no cover - a wiring bug
    raise ImportError("models.names.DATASET_NAMES and the data set loaders disagree")


def describe_datasets() -> dict[str, str]:
    """Return one line of help per accepted data set form, keyed by its usage.

    Returns:
        ``{"digits": "scikit-learn's ...", "imagefolder:<dir>": "...", ...}`` in the
        order a help text should list them.
    """
    return {source.usage: source.description for source in _SOURCES.values()}


def _parse(name: str) -> tuple[str, str]:
    """Return ``(kind, argument)`` for a data set name such as ``npz:/tmp/up.npz``."""
    text = name.strip()
    prefix, sep, arg = text.partition(":")
    kind = prefix.strip().lower().replace("-", "_")
    if kind not in _SOURCES and text.lower().endswith(".npz"):
        return "npz", text
    if kind in _NEEDS_PATH:
        if not arg.strip():
            raise DataError(f"{kind} needs a path: {_SOURCES[kind].usage}")
        return kind, arg.strip()
    if kind == "synthetic":
        return kind, arg
    if kind in _SOURCES:
        if sep:
            raise DataError(f"data set {kind} takes no options, got {name!r}")
        return kind, ""
    close = difflib.get_close_matches(kind, [*DATASETS, *_NEEDS_PATH], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DataError(
        f"unknown data set {name!r}.{hint} Use one of {', '.join(DATASETS)}, "
        "imagefolder:<dir>, or a path to an .npz file"
    )


def _shown(name: str, kind: str, arg: str) -> str:
    """Return the data set's name as its owner knows it: a file or folder by its own name
    (``d.npz``, ``imagefolder:pets``), not the path it has on this machine."""
    if kind not in _NEEDS_PATH:
        return name
    base = Path(arg).name or arg
    return base if kind == "npz" else f"{kind}:{base}"


def _check_input_shape(input_shape: Sequence[int], name: str, ranks: tuple[int, ...]) -> None:
    shape = tuple(int(size) for size in input_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise DataError(
            "input_shape must be (channels, height, width) or, for sequences, "
            f"(steps, features), got {tuple(input_shape)}"
        )
    if len(shape) not in ranks:
        wanted = "sequence models (steps, features)" if 2 in ranks else "image models (C, H, W)"
        raise DataError(f"{name} feeds {wanted}, not inputs of shape {shape}")


def load_dataset(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int | None = None,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DataSplits:
    """Return the data set ``name`` split into train / val / test for one model.

    Public data sets are read from a local ``root`` only, never downloaded. Images are
    adapted per batch to ``input_shape`` (grey ↔ RGB, bilinear resize) and normalized
    with per-channel statistics of the train split. Official test sets (CIFAR, MNIST) and
    val / test arrays in an ``.npz`` are kept; missing splits are carved from train,
    stratified by label: test takes ``test_fraction`` of it, val ``val_fraction``.

    Args:
        name: a name from :data:`DATASETS` (``synthetic`` takes options such as
            ``synthetic:classes=4,samples=256,size=16``), ``imagefolder:<dir>``, or an
            ``.npz`` file as ``<file>.npz`` or ``npz:<file>``.
        input_shape: the model's input (channels, height, width), or (steps, features)
            for a sequence data set (``digits_seq``, ``fashion_mnist_seq``, an ``.npz``
            of (N, T, F) arrays): those are loaded as (1, T, F) images, rows as steps.
        num_classes: the model's number of outputs; data with more classes is refused,
            data with fewer is fine.
        root: where public data sets live; defaults to ``$INFERPRUNE_DATA_ROOT``, else
            ``~/.cache/inferprune/data``.
        seed: fixes the split: the same seed gives the same split.
        val_fraction: share of the train data held out for validation when the data set
            has no val split.
        test_fraction: share of the train data held out for the final test when the data
            set has no test split.

    Returns:
        The splits; ``num_classes`` on them is the data's (largest label + 1, or the
        data set's declared class count).

    Raises:
        DataError: unknown name, missing or malformed files (the message names the paths
            looked at), more classes than ``num_classes``, or data too small to split.
    """
    kind, arg = _parse(name)
    shown = _shown(name, kind, arg)
    _check_input_shape(input_shape, shown, _SOURCES[kind].input_ranks)
    sequences = len(input_shape) == 2
    channels, height, width = (
        image_shape_of(tuple(input_shape)) if sequences else tuple(int(v) for v in input_shape)
    )
    image_shape = (channels, height, width)
    if sequences and kind == "npz":
        _npz.check_npz_sequences(arg, (height, width))
    raw = _SOURCES[kind].load(arg, resolve_data_root(root), image_shape)
    splits = build_splits(
        raw,
        name=shown,
        input_shape=image_shape,
        num_classes=num_classes,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    return as_sequences(splits) if sequences else splits


def inspect_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> DatasetInfo:
    """Return how many classes and samples the data set ``name`` holds, cheaply.

    Meant for validating an upload before accepting it: files are checked from their
    headers and labels where possible, without decoding every image.

    Args:
        name: as for :func:`load_dataset`.
        root: as for :func:`load_dataset`.
        num_classes: when given, data with more classes than this is refused.

    Returns:
        ``DatasetInfo(num_classes, num_samples)``, a named tuple; samples of all splits.

    Raises:
        DataError: as :func:`load_dataset`.
    """
    kind, arg = _parse(name)
    info = _SOURCES[kind].inspect(arg, resolve_data_root(root))
    if num_classes is not None and info.num_classes > num_classes:
        raise DataError(
            f"{_shown(name, kind, arg)} has {info.num_classes} classes but the model has "
            f"{num_classes} outputs; "
            f"use num_classes={info.num_classes} or more"
        )
    return info
