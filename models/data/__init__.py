"""Data sets and deterministic train / val / test splits, ready for one model.

``load_dataset(name, input_shape=...)`` returns :class:`DataSplits` whose splits yield
normalized float batches of the model's input shape. Names: ``digits`` (real
handwritten digits bundled with scikit-learn, works offline), ``synthetic`` (seeded,
learnable, for tests), ``cifar10``, ``cifar100``, ``mnist`` and ``fashion_mnist`` (read
from a local data root, never downloaded), ``imagefolder:<dir>``, and ``.npz`` files
(loaded with ``allow_pickle=False``). CIFAR's python version is a pickle: it is read by
an unpickler that only builds numpy arrays, and the binary version is preferred.
:func:`inspect_dataset` checks a data set, such as an upload, without loading it all;
:func:`check_npz` checks every value of an ``.npz`` in bounded memory. Names come from
the torch-free :mod:`models.names`; messages about a file or folder name it by its own
name, not by where it lies on this machine.
"""

from __future__ import annotations

from models.data._batches_in_memory import InputSplit, collect_batches
from models.data._npz import MAX_NPZ_BYTES, check_npz, check_npz_sequences
from models.data._registry import DATASETS, describe_datasets, inspect_dataset, load_dataset
from models.data._root import DATA_ROOT_ENV, resolve_data_root
from models.data._source import DatasetInfo
from models.data._split import (
    BatchSource,
    DataSplits,
    IndexedSource,
    Normalization,
    TensorSplit,
    batch_indices,
)

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "MAX_NPZ_BYTES",
    "BatchSource",
    "DataSplits",
    "DatasetInfo",
    "IndexedSource",
    "InputSplit",
    "Normalization",
    "TensorSplit",
    "batch_indices",
    "check_npz",
    "check_npz_sequences",
    "collect_batches",
    "describe_datasets",
    "inspect_dataset",
    "load_dataset",
    "resolve_data_root",
]
