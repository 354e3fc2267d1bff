"""MNIST and Fashion-MNIST from local IDX files (plain or gzipped), parsed with numpy."""

from __future__ import annotations

import gzip
import io
import math
import struct
from pathlib import Path

import numpy as np

from models.data._root import missing_files_error
from models.data._source import DatasetInfo, InputShape, LabelledImages, RawData
from models.errors import DataError

__all__ = ["inspect_fashion_mnist", "inspect_mnist", "load_fashion_mnist", "load_mnist"]

_UBYTE = 0x08
# the largest file of either set is 47 MB; anything far bigger is not an IDX file we want
_MAX_BYTES = 256 * 2**20
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_DIRS = ("MNIST/raw", "mnist")
_FASHION_DIRS = ("FashionMNIST/raw", "fashion_mnist", "fashion-mnist")
"""torchvision's layout, ours, and Debian's (``apt install dataset-fashion-mnist`` puts the
files in ``/usr/share/datasets/fashion-mnist``)."""
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _plain_or_gz(path: Path) -> bool:
    return path.is_file() or path.with_name(path.name + ".gz").is_file()


def _find_files(dataset: str, root: Path, folders: tuple[str, ...], source: str) -> dict[str, Path]:
    """Return the four IDX files of the first folder that has them all (plain or .gz)."""
    for folder in folders:
        found: dict[str, Path] = {}
        for key, stem in _FILES.items():
            plain = root / folder / stem
            gz = plain.with_name(stem + ".gz")
            if plain.is_file():
                found[key] = plain
            elif gz.is_file():
                found[key] = gz
        if len(found) == len(_FILES):
            return found
    layouts = [
        (f"{root / folder}/ (each file may also end in .gz)",
         [root / folder / stem for stem in _FILES.values()])
        for folder in folders
    ]  # fmt: skip
    raise missing_files_error(dataset, root, layouts, source, present=_plain_or_gz)


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_header(stream: io.BufferedIOBase, path: Path, ndim: int) -> tuple[int, ...]:
    head = stream.read(4 + 4 * ndim)
    if len(head) < 4 or head[0] or head[1] or head[2] != _UBYTE or head[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimensions "
            f"(magic {head[:4].hex() or 'missing'}); re-extract the original MNIST archive"
        )
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated inside its header")
    return tuple(struct.unpack(f">{ndim}I", head[4:]))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Return the unsigned-byte array stored in the IDX file at ``path``.

    Raises:
        DataError: wrong magic number, dimension count or size.
    """
    try:
        with _open(path) as stream:
            dims = _read_header(stream, path, ndim)
            expected = math.prod(dims)
            if expected > _MAX_BYTES:
                raise DataError(f"{path} claims shape {dims}, far larger than MNIST")
            body = stream.read(expected + 1)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(body) != expected:
        raise DataError(
            f"{path} should hold {expected} bytes of data for shape {dims}, found "
            f"{len(body)}{'+' if len(body) > expected else ''}: it is truncated or corrupt"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _count(path: Path, ndim: int) -> int:
    try:
        with _open(path) as stream:
            return _read_header(stream, path, ndim)[0]
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _part(files: dict[str, Path], split: str) -> LabelledImages:
    images = read_idx(files[f"{split}_images"], 3)
    labels = read_idx(files[f"{split}_labels"], 1)
    if len(images) != len(labels):
        raise DataError(
            f"{files[f'{split}_images']} holds {len(images)} images but "
            f"{files[f'{split}_labels']} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= 10:
        raise DataError(f"{files[f'{split}_labels']} holds labels above 9: it is not MNIST")
    return LabelledImages(images[:, None], labels.astype(np.int64))


def _load(files: dict[str, Path], class_names: tuple[str, ...]) -> RawData:
    return RawData(_part(files, "train"), None, _part(files, "test"), 10, class_names)


def _inspect(files: dict[str, Path]) -> DatasetInfo:
    return DatasetInfo(10, _count(files["train_labels"], 1) + _count(files["test_labels"], 1))


_MNIST_SOURCE = "torchvision.datasets.MNIST(<root>, download=True) on a machine online"
_FASHION_SOURCE = (
    "torchvision.datasets.FashionMNIST(<root>, download=True) on a machine online, or "
    "`apt install dataset-fashion-mnist` on Debian (root /usr/share/datasets)"
)


def load_mnist(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return MNIST from ``<root>/MNIST/raw`` (torchvision's layout) or ``<root>/mnist``."""
    files = _find_files("mnist", root, _MNIST_DIRS, _MNIST_SOURCE)
    return _load(files, tuple(str(digit) for digit in range(10)))


def inspect_mnist(arg: str, root: Path) -> DatasetInfo:
    """Return MNIST's class and sample counts from the IDX headers alone."""
    return _inspect(_find_files("mnist", root, _MNIST_DIRS, _MNIST_SOURCE))


def load_fashion_mnist(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return Fashion-MNIST from ``<root>/FashionMNIST/raw``, ``<root>/fashion_mnist`` or
    ``<root>/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package)."""
    files = _find_files("fashion_mnist", root, _FASHION_DIRS, _FASHION_SOURCE)
    return _load(files, _FASHION_NAMES)


def inspect_fashion_mnist(arg: str, root: Path) -> DatasetInfo:
    """Return Fashion-MNIST's class and sample counts from the IDX headers alone."""
    return _inspect(_find_files("fashion_mnist", root, _FASHION_DIRS, _FASHION_SOURCE))
