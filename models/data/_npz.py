"""Uploaded ``.npz`` data sets: checked from their array headers, never unpickled."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from models.data._source import (
    DatasetInfo,
    InputShape,
    LabelledImages,
    RawData,
    channel_layout,
    images_to_nchw,
    labels_to_int64,
)
from models.errors import DataError

__all__ = ["MAX_NPZ_BYTES", "inspect_npz", "load_npz"]

MAX_NPZ_BYTES = 4 * 2**30
"""Largest total size of the arrays an ``.npz`` may unpack to (guards zip bombs)."""
_MAX_CLASSES = 100_000
_SPLITS = ("train", "val", "test")
_KEYS = tuple(f"{axis}_{split}" for split in _SPLITS for axis in ("x", "y"))
_HOW = (
    "an .npz data set holds x_train and y_train, optionally x_val, y_val, x_test and "
    "y_test, written with numpy.savez(path, x_train=..., y_train=...)"
)

_Header = tuple[tuple[int, ...], np.dtype]


def _read_headers(path: Path) -> dict[str, _Header]:
    """Return the shape and dtype of each known array without reading its data."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    headers: dict[str, _Header] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if key not in _KEYS:
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version in ((2, 0), (3, 0)):
                        # 3.0 differs from 2.0 only for non-Latin-1 field names, which
                        # the dtype check rejects anyway
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise DataError(f"{path}: {key} uses unknown .npy format {version}")
                headers[key] = (tuple(shape), dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); {_HOW}") from exc
    return headers


def _check_headers(path: Path, headers: dict[str, _Header]) -> dict[str, int]:
    """Return the sample count of each split present, after checking every header."""
    for key in ("x_train", "y_train"):
        if key not in headers:
            held = ", ".join(sorted(headers)) or "none of the expected arrays"
            raise DataError(f"{path} has no {key} array (it holds {held}); {_HOW}")
    counts: dict[str, int] = {}
    total_bytes = 0
    for split in _SPLITS:
        present = [key for key in (f"x_{split}", f"y_{split}") if key in headers]
        if len(present) == 1:
            raise DataError(f"{path} has {present[0]} without its partner; {_HOW}")
        if not present:
            continue
        (x_shape, x_dtype), (y_shape, y_dtype) = headers[f"x_{split}"], headers[f"y_{split}"]
        for key, dtype in ((f"x_{split}", x_dtype), (f"y_{split}", y_dtype)):
            if dtype.hasobject or dtype.kind not in "uifb":
                raise DataError(
                    f"{path}: {key} has dtype {dtype}; only plain numeric arrays are accepted "
                    "(object arrays would need pickle, which is never used)"
                )
        channel_layout(x_shape, f"{path}: x_{split}")
        if len(y_shape) not in (1, 2) or (len(y_shape) == 2 and y_shape[1] != 1):
            raise DataError(f"{path}: y_{split} has shape {y_shape}; expected (N,)")
        if x_shape[0] != y_shape[0]:
            raise DataError(
                f"{path}: x_{split} has {x_shape[0]} samples but y_{split} has {y_shape[0]} "
                "labels; they must match one to one"
            )
        if x_shape[0] == 0:
            raise DataError(f"{path}: x_{split} is empty")
        counts[split] = x_shape[0]
        total_bytes += math.prod(x_shape) * x_dtype.itemsize + math.prod(y_shape) * y_dtype.itemsize
    if total_bytes > MAX_NPZ_BYTES:
        raise DataError(
            f"{path} unpacks to {total_bytes / 2**30:.1f} GiB of arrays; at most "
            f"{MAX_NPZ_BYTES / 2**30:.0f} GiB is accepted"
        )
    return counts


def _load_arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _num_classes(path: Path, labels: list[np.ndarray]) -> int:
    top = max(int(y.max()) for y in labels)
    if top >= _MAX_CLASSES:
        raise DataError(
            f"{path} has label {top}; labels are class indices 0..K-1 with K at most {_MAX_CLASSES}"
        )
    return top + 1


def load_npz(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return the data set in the ``.npz`` file ``arg``, loaded with ``allow_pickle=False``.

    Images may be (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float; labels are
    integer class indices; the number of classes is the largest label plus one.

    Raises:
        DataError: missing or unpaired arrays, object or non-numeric arrays, mismatched
            lengths, bad shapes or values, or a file too large to unpack.
    """
    path = Path(arg).expanduser()
    counts = _check_headers(path, _read_headers(path))
    arrays = _load_arrays(path, [f"{axis}_{split}" for split in counts for axis in "xy"])
    parts = {
        split: LabelledImages(
            images_to_nchw(arrays[f"x_{split}"], f"{path}: x_{split}"),
            labels_to_int64(arrays[f"y_{split}"], f"{path}: y_{split}"),
        )
        for split in counts
    }
    num_classes = _num_classes(path, [part.labels for part in parts.values()])
    return RawData(parts["train"], parts.get("val"), parts.get("test"), num_classes)


def inspect_npz(arg: str, root: Path) -> DatasetInfo:
    """Return the class and sample counts of the ``.npz`` file ``arg``.

    Reads the array headers and the labels only, so it is cheap even for large files,
    and runs every check :func:`load_npz` does except the image values themselves.

    Raises:
        DataError: as :func:`load_npz`.
    """
    path = Path(arg).expanduser()
    counts = _check_headers(path, _read_headers(path))
    arrays = _load_arrays(path, [f"y_{split}" for split in counts])
    labels = [labels_to_int64(y, f"{path}: {key}") for key, y in arrays.items()]
    return DatasetInfo(_num_classes(path, labels), sum(counts.values()))
