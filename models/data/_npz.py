"""Uploaded ``.npz`` data sets: checked from their array headers, never unpickled.

Messages name the file by its name alone (``d.npz``), as the person who made it knows
it, never by the folder it sits in on this machine.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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

__all__ = ["MAX_NPZ_BYTES", "check_npz", "inspect_npz", "load_npz"]

MAX_NPZ_BYTES = 4 * 2**30
"""Largest total size of the arrays an ``.npz`` may unpack to (guards zip bombs)."""
MAX_CLASSES = 100_000
_SPLITS = ("train", "val", "test")
_KEYS = tuple(f"{axis}_{split}" for split in _SPLITS for axis in ("x", "y"))
_CHUNK = 8 << 20  # a multiple of every numeric item size
_HOW = (
    "an .npz data set holds x_train and y_train, optionally x_val, y_val, x_test and "
    "y_test, written with numpy.savez(path, x_train=..., y_train=...)"
)
_LABELS = "labels are class indices 0..K-1"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError)


@dataclass(frozen=True)
class _Member:
    """One array of the ``.npz``: where it is and what its header declares."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _reason(exc: BaseException) -> str:
    """Return why a read failed, without the file's path (``OSError`` puts it in)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _read_header(member: IO[bytes], what: str) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):
        # 3.0 differs from 2.0 only for non-Latin-1 field names, which the dtype check
        # rejects anyway
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise DataError(f"{what} uses unknown .npy format {version}")
    return tuple(shape), dtype


def _read_headers(path: Path) -> dict[str, _Member]:
    """Return the shape and dtype of each known array without reading its data."""
    if not path.is_file():
        raise DataError(f"{path.name} does not exist or is not a file")
    members: dict[str, _Member] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if key not in _KEYS:
                    continue
                if key in members:
                    raise DataError(f"{path.name} holds {key} twice; {_HOW}")
                with archive.open(info) as member:
                    shape, dtype = _read_header(member, f"{path.name}: {key}")
                    members[key] = _Member(info, shape, dtype, member.tell())
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path.name} is not a readable .npz file ({_reason(exc)}); {_HOW}"
        ) from None
    return members


def _check_headers(path: Path, members: dict[str, _Member], max_bytes: int) -> dict[str, int]:
    """Return the sample count of each split present, after checking every header and
    the sizes the zip declares (nothing is decompressed)."""
    name = path.name
    for key in ("x_train", "y_train"):
        if key not in members:
            held = ", ".join(sorted(members)) or "none of the expected arrays"
            raise DataError(f"{name} has no {key} array (it holds {held}); {_HOW}")
    counts: dict[str, int] = {}
    for split in _SPLITS:
        present = [key for key in (f"x_{split}", f"y_{split}") if key in members]
        if len(present) == 1:
            raise DataError(f"{name} has {present[0]} without its partner; {_HOW}")
        if not present:
            continue
        x, y = members[f"x_{split}"], members[f"y_{split}"]
        for key, member in ((f"x_{split}", x), (f"y_{split}", y)):
            if member.dtype.hasobject or member.dtype.kind not in "uifb":
                raise DataError(
                    f"{name}: {key} has dtype {member.dtype}; only plain numeric arrays are "
                    "accepted (object arrays would need pickle, which is never used)"
                )
        channel_layout(x.shape, f"{name}: x_{split}")
        if len(y.shape) not in (1, 2) or (len(y.shape) == 2 and y.shape[1] != 1):
            raise DataError(f"{name}: y_{split} has shape {y.shape}; expected (N,)")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{name}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]} "
                "labels; they must match one to one"
            )
        if x.shape[0] == 0:
            raise DataError(f"{name}: x_{split} is empty")
        counts[split] = x.shape[0]
    declared = sum(m.data_bytes for m in members.values())
    stored = sum(m.info.file_size for m in members.values())
    if max(declared, stored) > max_bytes:
        raise DataError(
            f"{name} unpacks to {_gib(max(declared, stored))} of arrays; at most "
            f"{_gib(max_bytes)} is accepted (save images as uint8, or upload fewer)"
        )
    for key, member in members.items():
        if member.info.file_size != member.header_bytes + member.data_bytes:
            raise DataError(
                f"{name}: {key} holds {member.info.file_size:,} bytes but its header "
                f"describes {member.header_bytes + member.data_bytes:,}; the file is damaged"
            )
    return counts


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _load_arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in keys}
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path.name}: {_reason(exc)}") from None


def _num_classes(name: str, top: int) -> int:
    if top >= MAX_CLASSES:
        raise DataError(
            f"{name} has label {top}; labels are class indices 0..K-1 with K at most "
            f"{MAX_CLASSES:,}"
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
    counts = _check_headers(path, _read_headers(path), MAX_NPZ_BYTES)
    arrays = _load_arrays(path, [f"{axis}_{split}" for split in counts for axis in "xy"])
    parts = {
        split: LabelledImages(
            images_to_nchw(arrays[f"x_{split}"], f"{path.name}: x_{split}"),
            labels_to_int64(arrays[f"y_{split}"], f"{path.name}: y_{split}"),
        )
        for split in counts
    }
    top = max(int(part.labels.max()) for part in parts.values())
    classes = _num_classes(path.name, top)
    return RawData(parts["train"], parts.get("val"), parts.get("test"), classes)


def check_npz_sequences(arg: str, shape: tuple[int, ...]) -> None:
    """Refuse, for a sequence model of input ``shape`` (T, F), an ``.npz`` whose arrays are
    not (N, T, F) sequences of exactly that shape (images, or sequences of another
    length, would otherwise be resized to fit). Reads the array headers only.

    Raises:
        DataError: what the file holds and what to set instead.
    """
    path = Path(arg).expanduser()
    members = _read_headers(path)
    counts = _check_headers(path, members, MAX_NPZ_BYTES)
    name, (steps, features) = path.name, shape
    for split in counts:
        held = members[f"x_{split}"].shape
        if len(held) != 3:
            raise DataError(
                f"{name}: x_{split} has shape {held}, images; a sequence model reads "
                f"(N, T, F) sequences of {steps} steps × {features} features: save them so"
            )
        if tuple(held[1:]) != (steps, features):
            raise DataError(
                f"{name}: x_{split} holds sequences of {held[1]} steps × {held[2]} features, "
                f"but the model reads input_shape [{steps}, {features}]: set input_shape "
                f"[{held[1]}, {held[2]}] (--input-shape {held[1]},{held[2]})"
            )


def inspect_npz(arg: str, root: Path) -> DatasetInfo:
    """Return the class and sample counts of the ``.npz`` file ``arg``.

    Reads the array headers and the labels only, so it is cheap even for large files,
    and runs every check :func:`load_npz` does except the image values themselves
    (:func:`check_npz` checks those too).

    Raises:
        DataError: as :func:`load_npz`.
    """
    path = Path(arg).expanduser()
    counts = _check_headers(path, _read_headers(path), MAX_NPZ_BYTES)
    arrays = _load_arrays(path, [f"y_{split}" for split in counts])
    labels = [labels_to_int64(y, f"{path.name}: {key}") for key, y in arrays.items()]
    top = max(int(y.max()) for y in labels)
    return DatasetInfo(_num_classes(path.name, top), sum(counts.values()))


def check_npz(path: str | Path, *, max_bytes: int = MAX_NPZ_BYTES) -> DatasetInfo:
    """Return the class and sample counts of an ``.npz`` after checking every value.

    Every check of :func:`load_npz` runs, without ever holding an array: the sizes the
    zip and the array headers declare are compared with ``max_bytes`` before anything is
    decompressed, then each array is streamed in chunks of a few MiB, counting the bytes
    actually read (a member holding more or less than its header says is refused) and
    checking that pixels are finite (floats) or within [0, 255] (integers) and labels
    are whole, non-negative class indices. Memory use stays at one chunk.

    Args:
        path: the ``.npz`` file.
        max_bytes: the most its arrays may unpack to, together.

    Returns:
        ``DatasetInfo(num_classes, num_samples)``.

    Raises:
        DataError: as :func:`load_npz`, and for values that are not finite or out of
            range, or arrays larger than ``max_bytes``.
    """
    path = Path(path).expanduser()
    members = _read_headers(path)
    counts = _check_headers(path, members, max_bytes)
    top = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for split in counts:
                x, y = members[f"x_{split}"], members[f"y_{split}"]
                _stream(archive, x, _pixel_check(f"{path.name}: x_{split}", x.dtype))
                labels = _LabelCheck(f"{path.name}: y_{split}", y.dtype)
                _stream(archive, y, labels)
                top = max(top, labels.top)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path.name}: {_reason(exc)}") from None
    return DatasetInfo(_num_classes(path.name, top), sum(counts.values()))


def _stream(archive: zipfile.ZipFile, member: _Member, visit: Callable[[np.ndarray], None]) -> None:
    """Read ``member``'s data in chunks, handing each to ``visit`` as an array; refuse a
    member whose data ends early or runs on past what its header declares."""
    left = member.data_bytes
    with archive.open(member.info) as stream:
        stream.read(member.header_bytes)
        while left:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk or len(chunk) % member.dtype.itemsize:
                raise DataError(f"{member.info.filename} ends early; the file is damaged")
            left -= len(chunk)
            visit(np.frombuffer(chunk, dtype=member.dtype))
        if stream.read(1):
            raise DataError(
                f"{member.info.filename} holds more data than its header describes; "
                "the file is damaged"
            )


def _pixel_check(what: str, dtype: np.dtype) -> Callable[[np.ndarray], None]:
    def finite(values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise DataError(f"{what} contains NaN or infinite values")

    def in_range(values: np.ndarray) -> None:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{what} holds integers in [{low}, {high}] (in some samples); integer pixels "
                "must be in [0, 255] (or save floats)"
            )

    if dtype.kind == "f":
        return finite
    if dtype.kind in "ui" and dtype != np.uint8:
        return in_range
    return lambda values: None  # uint8 and bool hold nothing out of range


class _LabelCheck:
    """Checks label chunks as :func:`labels_to_int64` checks a whole array; keeps the
    largest label."""

    def __init__(self, what: str, dtype: np.dtype) -> None:
        self.what = what
        self.dtype = dtype
        self.top = 0

    def __call__(self, values: np.ndarray) -> None:
        if self.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all()
        ):
            raise DataError(f"{self.what} holds non-integer values; {_LABELS}")
        if values.min() < 0:
            raise DataError(f"{self.what} holds negative labels; {_LABELS}")
        top = float(values.max())
        if top >= MAX_CLASSES:
            raise DataError(
                f"{self.what} has label {int(top)}; labels are class indices 0..K-1 with K at "
                f"most {MAX_CLASSES:,}"
            )
        self.top = max(self.top, int(top))
