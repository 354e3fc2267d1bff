"""Read numpy-only pickles (CIFAR's python version) without ever running their code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError

__all__ = ["load_numpy_pickle"]

# Exactly what a pickled dict of uint8 arrays, lists and strings needs: Python 2's
# cPickle (the original CIFAR files) and Python 3's protocols 2-5 under numpy 1 and 2.
_ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})  # fmt: skip


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and plain containers.

    Every other global a pickle names, which is how a pickle runs code, is refused.
    """

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"refusing to load {self._path}: it asks to import {module}.{name}, which a "
                "CIFAR file never does (it could run code). Replace it with the original "
                "file, or use the binary version of the data set instead"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # numpy 2 renamed numpy.core; the old name still works but warns
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refusing to load {self._path}: it holds persistent references")


def load_numpy_pickle(path: Path) -> Any:
    """Return the object pickled in ``path``, built from numpy arrays and builtins only.

    Raises:
        DataError: the pickle names any other global, or cannot be read.
    """
    try:
        with path.open("rb") as stream:
            return _NumpyOnlyUnpickler(stream, path).load()
    except DataError:
        raise
    except Exception as exc:  # malformed pickles fail in many ways; all mean "bad file"
        raise DataError(f"cannot read {path} as a CIFAR pickle: {exc}") from exc
