"""CIFAR-10 and CIFAR-100 from a local copy: binary version first, python version second."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data._root import missing_files_error
from models.data._safe_pickle import load_numpy_pickle
from models.data._source import DatasetInfo, InputShape, LabelledImages, RawData
from models.errors import DataError

__all__ = ["inspect_cifar10", "inspect_cifar100", "load_cifar10", "load_cifar100"]

_PIXELS = 3 * 32 * 32
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _Variant:
    """Where one CIFAR data set's files live in each version, and how to read them."""

    name: str
    num_classes: int
    bin_dir: str
    bin_train: tuple[str, ...]
    bin_test: str
    label_bytes: int  # CIFAR-100 records hold (coarse, fine) labels; we use the last
    bin_names: str  # a text file of class names, one per line (optional)
    py_dir: str
    py_train: tuple[str, ...]
    py_test: str
    py_label_key: str
    py_meta: tuple[str, str]  # (file, key) of the class names (optional)

    def bin_files(self, root: Path) -> list[Path]:
        return [root / self.bin_dir / name for name in (*self.bin_train, self.bin_test)]

    def py_files(self, root: Path) -> list[Path]:
        return [root / self.py_dir / name for name in (*self.py_train, self.py_test)]


_CIFAR10 = _Variant(
    name="cifar10",
    num_classes=10,
    bin_dir="cifar-10-batches-bin",
    bin_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    bin_test="test_batch.bin",
    label_bytes=1,
    bin_names="batches.meta.txt",
    py_dir="cifar-10-batches-py",
    py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    py_test="test_batch",
    py_label_key="labels",
    py_meta=("batches.meta", "label_names"),
)
_CIFAR100 = _Variant(
    name="cifar100",
    num_classes=100,
    bin_dir="cifar-100-binary",
    bin_train=("train.bin",),
    bin_test="test.bin",
    label_bytes=2,
    bin_names="fine_label_names.txt",
    py_dir="cifar-100-python",
    py_train=("train",),
    py_test="test",
    py_label_key="fine_labels",
    py_meta=("meta", "fine_label_names"),
)


def _read_bin(path: Path, label_bytes: int, num_classes: int) -> LabelledImages:
    record = label_bytes + _PIXELS
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % record:
        raise DataError(
            f"{path} holds {data.size} bytes, not a whole number of {record}-byte CIFAR "
            "records: it is truncated or not a CIFAR binary file"
        )
    rows = data.reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    if labels.max() >= num_classes:
        raise DataError(f"{path} holds label {labels.max()}; expected 0..{num_classes - 1}")
    images = np.ascontiguousarray(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
    return LabelledImages(images, labels)


def _read_py(path: Path, label_key: str, num_classes: int) -> LabelledImages:
    batch = _str_keys(load_numpy_pickle(path), path)
    data, labels_in = batch.get("data"), batch.get(label_key)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and len(data) > 0
        and data.shape[1] == _PIXELS
    ):
        raise DataError(f"{path} has no non-empty uint8 'data' array of shape (N, {_PIXELS})")
    try:
        labels = np.asarray(labels_in, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path} has no integer {label_key!r} list") from exc
    if labels.shape != (len(data),) or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"{path} needs {len(data)} {label_key!r} in 0..{num_classes - 1}, "
            f"found shape {labels.shape}"
        )
    return LabelledImages(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels)


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR batch (a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _concat(parts: Sequence[LabelledImages]) -> LabelledImages:
    return LabelledImages(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
    )


def _bin_names(path: Path, count: int) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    names = tuple(line.strip() for line in path.read_text("latin1").splitlines() if line.strip())
    return names if len(names) == count else ()


def _py_names(path: Path, key: str, count: int) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    names = _str_keys(load_numpy_pickle(path), path).get(key)
    if not isinstance(names, list) or len(names) != count:
        return ()
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def _load(v: _Variant, root: Path) -> RawData:
    if all(path.is_file() for path in v.bin_files(root)):
        *train, test = (_read_bin(p, v.label_bytes, v.num_classes) for p in v.bin_files(root))
        names = _bin_names(root / v.bin_dir / v.bin_names, v.num_classes)
    elif all(path.is_file() for path in v.py_files(root)):
        *train, test = (_read_py(p, v.py_label_key, v.num_classes) for p in v.py_files(root))
        names = _py_names(root / v.py_dir / v.py_meta[0], v.py_meta[1], v.num_classes)
    else:
        raise _missing(v, root)
    if v.name == "cifar10":
        names = names or _CIFAR10_NAMES
    return RawData(_concat(train), None, test, v.num_classes, names)


def _inspect(v: _Variant, root: Path) -> DatasetInfo:
    if all(path.is_file() for path in v.bin_files(root)):
        record = v.label_bytes + _PIXELS
        return DatasetInfo(
            v.num_classes, sum(p.stat().st_size // record for p in v.bin_files(root))
        )
    if all(path.is_file() for path in v.py_files(root)):
        return DatasetInfo(v.num_classes, 60_000)  # counting would mean unpickling it all
    raise _missing(v, root)


def _missing(v: _Variant, root: Path) -> DataError:
    layouts = [
        ("binary version (preferred)", v.bin_files(root)),
        ("python version", v.py_files(root)),
    ]
    return missing_files_error(v.name, root, layouts, _SOURCE)


def load_cifar10(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return CIFAR-10 from ``<root>/cifar-10-batches-bin`` or ``<root>/cifar-10-batches-py``."""
    return _load(_CIFAR10, root)


def inspect_cifar10(arg: str, root: Path) -> DatasetInfo:
    """Return CIFAR-10's class and sample counts without reading the images."""
    return _inspect(_CIFAR10, root)


def load_cifar100(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return CIFAR-100 (fine labels) from ``<root>/cifar-100-binary`` or ``-python``."""
    return _load(_CIFAR100, root)


def inspect_cifar100(arg: str, root: Path) -> DatasetInfo:
    """Return CIFAR-100's class and sample counts without reading the images."""
    return _inspect(_CIFAR100, root)
