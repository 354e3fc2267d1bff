"""scikit-learn's bundled handwritten digits: real 8x8 grey images, works offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits as _sklearn_digits

from models.data._source import DatasetInfo, InputShape, LabelledImages, RawData

__all__ = ["inspect_digits", "load_digits"]

_MAX_PIXEL = 16.0  # the UCI digits count ink in 4x4 blocks: 0..16


def load_digits(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return the 1,797 digits as float32 (N, 1, 8, 8) images in [0, 1], 10 classes."""
    bunch = _sklearn_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / _MAX_PIXEL)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = tuple(str(name) for name in bunch.target_names)
    return RawData(LabelledImages(np.ascontiguousarray(images), labels), None, None, 10, names)


def inspect_digits(arg: str, root: Path) -> DatasetInfo:
    """Return the digits' class and sample counts."""
    return DatasetInfo(10, len(_sklearn_digits().target))
