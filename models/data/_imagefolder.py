"""A folder of images with one sub-folder per class, loaded into memory at model size.

Messages name files from the data set's own folder down (``pets/cat/3.png``), never by
where that folder sits on this machine.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from models.data._source import DatasetInfo, InputShape, LabelledImages, RawData
from models.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "inspect_imagefolder", "load_imagefolder"]

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp",
)  # fmt: skip
# far below PIL's own bomb threshold (~179 Mpx): a training image this big is a mistake
MAX_IMAGE_PIXELS = 40_000_000


def _shown(path: Path, folder: Path) -> str:
    """Return ``path`` as the data set's owner knows it: from ``folder``'s name down."""
    try:
        return str(Path(folder.name) / path.relative_to(folder))
    except ValueError:
        return path.name


def _scan(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Return the class names (sorted sub-folders) and every (image, class) pair."""
    if not folder.is_dir():
        raise DataError(f"imagefolder {folder.name or folder} is not a directory")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"imagefolder {folder.name} has no class sub-folders; put each class's images "
            f"in its own folder: {folder.name}/<class name>/<image>.png"
        )
    samples: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        files = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
        if not files:
            raise DataError(
                f"class folder {folder.name}/{name} holds no images "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
            )
        samples.extend((path, index) for path in files)
    return classes, samples


DECODE_THREADS = min(8, os.cpu_count() or 1)
"""Threads that decode an image folder's files (PIL releases the GIL while decoding)."""


def _read(path: Path, folder: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Return one image converted to ``mode`` and resized to ``size`` (W, H), as uint8."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{_shown(path, folder)} is {image.width}x{image.height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS:,} allowed; shrink it first"
                )
            image.draft(mode, size)  # lets JPEG decode at a reduced scale
            converted = image.convert(mode).resize(size, Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
    # PIL signals a broken file with any of these, depending on the format plugin
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL and the OS put the full path in their messages
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = reason.replace(f"'{path}'", "").replace(str(path), path.name).strip()
        raise DataError(f"cannot read image {_shown(path, folder)}: {reason}") from None


def load_imagefolder(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return every image under the folder ``arg``, resized to the model's input size.

    Images become grey for one-channel models and RGB otherwise; classes are the
    sub-folder names in sorted order.

    Raises:
        DataError: not a folder, no class folders, an empty class, or an unreadable image.
    """
    folder = Path(arg).expanduser()
    classes, samples = _scan(folder)
    channels, height, width = input_shape
    mode = "L" if channels == 1 else "RGB"
    # decoding releases the GIL: threads keep every core busy (the first error is raised)
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        decoded = pool.map(lambda pair: _read(pair[0], folder, mode, (width, height)), samples)
        pixels = np.stack(list(decoded))
    images = pixels[:, None] if mode == "L" else pixels.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    train = LabelledImages(np.ascontiguousarray(images), labels)
    return RawData(train, None, None, len(classes), tuple(classes))


def inspect_imagefolder(arg: str, root: Path) -> DatasetInfo:
    """Return the class and image counts of the folder ``arg`` without decoding images."""
    classes, samples = _scan(Path(arg).expanduser())
    return DatasetInfo(len(classes), len(samples))
