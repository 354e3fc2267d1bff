"""What a data source loader returns: labelled image arrays, checked and in NCHW."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from models.errors import DataError

__all__ = [
    "DatasetInfo",
    "InputShape",
    "LabelledImages",
    "RawData",
    "channel_layout",
    "images_to_nchw",
    "labels_to_int64",
]

InputShape = tuple[int, int, int]
"""A model's input as (channels, height, width)."""


class DatasetInfo(NamedTuple):
    """How many classes and samples (all splits together) a data set holds."""

    num_classes: int
    num_samples: int


@dataclass(frozen=True)
class LabelledImages:
    """Images (N, C, H, W), uint8 in [0, 255] or float32, with int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> LabelledImages:
        """Return the samples at ``index``, copied."""
        return LabelledImages(self.images[index], self.labels[index])


@dataclass(frozen=True)
class RawData:
    """One data set as loaded from its source, before splitting.

    ``val`` and ``test`` are ``None`` when the source has no such split; they are then
    carved from ``train``. Every label is below ``num_classes``.
    """

    train: LabelledImages
    val: LabelledImages | None
    test: LabelledImages | None
    num_classes: int
    class_names: tuple[str, ...] = ()


def channel_layout(shape: tuple[int, ...], what: str) -> str:
    """Return ``"nchw"`` or ``"nhwc"`` for an image array of ``shape``.

    (N, H, W) arrays count as single-channel ``"nchw"`` once a channel axis is added.

    Raises:
        DataError: the shape is not 3-D or 4-D with 1 or 3 channels on a clear axis.
    """
    if len(shape) == 3:
        return "nchw"
    if len(shape) != 4:
        raise DataError(
            f"{what} has shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first:
        return "nchw"
    if last:
        return "nhwc"
    raise DataError(
        f"{what} has shape {shape}: neither axis 1 nor axis 3 holds 1 or 3 channels; "
        "save grey images as (N, H, W) and colour images as (N, H, W, 3) or (N, 3, H, W)"
    )


def images_to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous (N, C, H, W) uint8 or float32 array.

    Integer pixels must lie in [0, 255] and become uint8; floats and booleans become
    float32 and must be finite.

    Raises:
        DataError: unsupported dtype, shape or values.
    """
    layout = channel_layout(tuple(x.shape), what)
    if min(x.shape) < 1:
        raise DataError(f"{what} is empty (shape {tuple(x.shape)})")
    if x.dtype.kind in "ui":
        if x.dtype != np.uint8:
            low, high = int(x.min()), int(x.max())
            if low < 0 or high > 255:
                raise DataError(
                    f"{what} holds integers in [{low}, {high}]; integer pixels must be in "
                    "[0, 255] (or save floats)"
                )
            x = x.astype(np.uint8)
    elif x.dtype.kind in "fb":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{what} contains NaN or infinite values")
    else:
        raise DataError(f"{what} has dtype {x.dtype}; save images as uint8 or float arrays")
    if x.ndim == 3:
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def labels_to_int64(y: np.ndarray, what: str) -> np.ndarray:
    """Return class labels ``y`` as a 1-D int64 array of non-negative values.

    (N, 1) columns are flattened; float labels are accepted when they are whole numbers.

    Raises:
        DataError: wrong shape, dtype, or negative / fractional values.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} has shape {tuple(y.shape)}; expected one label per sample (N,)")
    if y.dtype.kind in "fb":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{what} holds non-integer values; labels are class indices 0..K-1")
    elif y.dtype.kind not in "ui":
        raise DataError(f"{what} has dtype {y.dtype}; labels are integer class indices 0..K-1")
    labels = y.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{what} holds negative labels; labels are class indices 0..K-1")
    return labels
