"""Uploaded data sets: an ``.npz`` file, or an archive of an image folder.

:mod:`models.data` is imported inside the function (it pulls in torch); see
:mod:`service.uploads._weights`.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from search.spec import JobSpec
from service.uploads._archive import extract_archive
from service.uploads._errors import UploadError
from service.uploads._formats import archive_kind

__all__ = ["MAX_DATASET_BYTES", "DatasetCheck", "check_public_dataset", "validate_dataset"]

MAX_DATASET_BYTES = 2**30
"""Default limit on what an uploaded ``.npz``'s arrays unpack to
(``INFERPRUNE_MAX_DATASET_BYTES``): CIFAR-10 as uint8 is 184 MB."""

_NPZ_MEMBERS = frozenset(
    f"{axis}_{split}.npy" for axis in "xy" for split in ("train", "val", "test")
)
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_SPOT_CHECKS_PER_CLASS = 2
_SPOT_CHECKS_TOTAL = 64
_FORMS = (
    "upload an .npz file (arrays x_train, y_train, optionally x_val, y_val, x_test, "
    "y_test) or a zip / tar archive of a folder with one sub-folder of images per class"
)


@dataclass(frozen=True)
class DatasetCheck:
    """What an accepted data set upload holds.

    Attributes:
        kind: ``npz`` or ``imagefolder``.
        name: the data set name workers load it by: ``npz:<file>`` or
            ``imagefolder:<folder>`` (absolute paths on this machine).
        num_classes: classes in the data (largest label + 1, or class folders).
        num_samples: samples of all splits together.
        path: the ``.npz`` file, or the extracted image folder.
    """

    kind: Literal["npz", "imagefolder"]
    name: str
    num_classes: int
    num_samples: int
    path: Path


def validate_dataset(
    spec: JobSpec,
    path: Path,
    filename: str,
    workdir: Path,
    *,
    num_classes: int | None = None,
    max_npz_bytes: int = MAX_DATASET_BYTES,
) -> DatasetCheck:
    """Check an uploaded data set and return how workers load it.

    An ``.npz`` (by name, or a zip whose first member is one of its arrays) is never
    unpickled: its declared sizes are checked against ``max_npz_bytes`` before anything
    is decompressed, then every value is streamed once in bounded memory (the bytes
    actually read are counted; pixels must be finite, labels whole class indices; see
    :func:`models.data.check_npz`). Anything else must be a zip or tar archive: it is
    extracted safely under ``workdir`` (see :func:`extract_archive`) and read as an
    image folder, opening a few images per class to catch non-images.

    Args:
        spec: the job's spec; its ``num_classes``, when set, bounds the data's classes.
        path: where the upload was saved.
        filename: the name the client gave the file (only its suffix is used).
        workdir: where to extract an archive; the image folder stays there for the job
            (it is removed again if the upload is refused).
        num_classes: bound to use when the spec gives none (for example the classes
            read off the uploaded weights).
        max_npz_bytes: the most an ``.npz``'s arrays may unpack to, together.

    Returns:
        The :class:`DatasetCheck`.

    Raises:
        UploadError: ``invalid_dataset`` (not an npz or archive, object arrays, missing
            or malformed arrays, NaN or infinite pixels, arrays unpacking to more than
            ``max_npz_bytes``, no class folders, unreadable images), ``dataset_mismatch``
            (more classes than the model has outputs; the message gives both numbers), or
            the archive codes of :func:`extract_archive`.
    """
    from models.data import check_npz, check_npz_sequences, inspect_dataset
    from models.errors import DataError

    limit = spec.num_classes if spec.num_classes is not None else num_classes
    extracted: Path | None = None
    try:
        if _is_npz(path, filename):
            kind: Literal["npz", "imagefolder"] = "npz"
            root = path.resolve()
        else:
            try:
                archive_kind(path)
            except UploadError:
                raise UploadError(
                    "invalid_dataset", f"{filename or path.name} is neither: {_FORMS}"
                ) from None
            kind = "imagefolder"
            root = extracted = extract_archive(path, workdir).resolve()
        name = f"{kind}:{root}"
        try:
            if kind == "npz":
                info = check_npz(root, max_bytes=max_npz_bytes)
                if spec.input_shape is not None and len(spec.input_shape) == 2:
                    check_npz_sequences(str(root), tuple(spec.input_shape))
            else:
                info = inspect_dataset(name)
                _spot_check_images(root)
        except DataError as exc:
            raise UploadError("invalid_dataset", _without_paths(str(exc), root)) from None
        if limit is not None and info.num_classes > limit:
            raise UploadError(
                "dataset_mismatch",
                f"the data set has {info.num_classes} classes but the model has {limit} "
                f"outputs (num_classes={limit}); set num_classes to {info.num_classes} or "
                "more, or upload matching data",
            )
    except BaseException:
        if extracted is not None:
            shutil.rmtree(extracted, ignore_errors=True)
        raise
    return DatasetCheck(kind, name, info.num_classes, info.num_samples, root)


def check_public_dataset(name: str, data_root: Path | None) -> None:
    """Check that the public data set ``name`` is installed where the workers read it.

    Args:
        name: a built-in data set name (``cifar10``, ...).
        data_root: the workers' data root (None: their default,
            ``$INFERPRUNE_DATA_ROOT`` or ``~/.cache/inferprune/data``).

    Raises:
        UploadError: ``dataset_unavailable``; the message names the data set and what to
            do, not this server's folders.
    """
    from models.data import inspect_dataset
    from models.errors import DataError

    try:
        inspect_dataset(name, root=data_root)
    except DataError:
        raise UploadError(
            "dataset_unavailable",
            f"dataset: {name} is not installed on this server (its workers never download "
            "data); ask the operator to put it in the workers' data root "
            "(INFERPRUNE_DATA_ROOT), or upload it as an .npz file with "
            '"dataset": "upload"',
        ) from None


def _is_npz(path: Path, filename: str) -> bool:
    """Return whether the upload is an ``.npz``: by name, or by its first zip member."""
    if filename.lower().endswith(".npz") or path.name.lower().endswith(".npz"):
        return True
    with path.open("rb") as handle:
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            return False
        magic, name_len, _ = _LOCAL_HEADER.unpack(header)
        return magic == b"PK\x03\x04" and handle.read(name_len).decode("latin-1") in _NPZ_MEMBERS


def _spot_check_images(root: Path) -> None:
    """Open the first images of every class folder: a data set of non-images fails now,
    not in the first trial.

    Raises:
        DataError: an image that does not open.
    """
    from PIL import Image

    from models.errors import DataError

    extensions = set(Image.registered_extensions())
    checked = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = (
            p
            for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in extensions and not p.name.startswith(".") and p.is_file()
        )
        for _, image_path in zip(range(_SPOT_CHECKS_PER_CLASS), images, strict=False):
            try:
                with Image.open(image_path) as image:
                    image.verify()
            except Exception as exc:  # PIL raises many types for a broken file
                relative = image_path.relative_to(root)
                raise DataError(f"{relative} is not a readable image ({exc})") from None
            checked += 1
            if checked >= _SPOT_CHECKS_TOTAL:
                return


def _without_paths(message: str, root: Path) -> str:
    """Return ``message`` without this server's folder names (the uploader never saw them)."""
    text = message.replace(f"npz:{root}", "the data set").replace(
        f"imagefolder:{root}", "the data set"
    )
    text = text.replace(f"{root}/", "").replace(str(root), "the upload")
    return text
