"""Uploaded files as they arrive: streamed to a file on disk and hashed on the way.

A request's files are never read into memory whole: each is copied in chunks of a MiB
into a fresh folder of its own under the server's data folder, hashed while it is
copied, checked from there and handed to the blob store from there. The folder goes
when the request is done, accepted or not.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["ReceivedFile", "receive_file", "remove_stale_uploads", "safe_filename"]

_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_MAX_NAME = 120


def safe_filename(name: str | None, default: str = "upload") -> str:
    """Return the client's file name reduced to a safe base name (no folders, no
    leading dots, plain characters, at most 120 of them), or ``default``."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip("._")
    if len(base) > _MAX_NAME:
        stem, dot, suffix = base.rpartition(".")
        base = f"{stem[: _MAX_NAME - len(suffix) - 1]}.{suffix}" if dot and suffix else base
        base = base[:_MAX_NAME]
    return base or default


@dataclass(frozen=True)
class ReceivedFile:
    """One uploaded file, on disk.

    Attributes:
        path: where it lies: ``<folder>/<filename>`` in a folder of its own.
        filename: the client's file name, made safe (see :func:`safe_filename`).
        size: its length in bytes.
        sha256: the SHA-256 of its bytes (hex).
    """

    path: Path
    filename: str
    size: int
    sha256: str

    def discard(self) -> None:
        """Remove the file and its folder (whatever a check extracted there too)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def receive_file(source: BinaryIO, folder: Path, filename: str | None) -> ReceivedFile:
    """Copy ``source`` to a new file under ``folder`` in chunks, hashing as it goes.

    Blocks (file I/O): call it from a worker thread.

    Args:
        source: the upload's stream (read from where it is now to its end).
        folder: the server's folder for incoming files; created if missing.
        filename: the name the client gave the file.

    Returns:
        The :class:`ReceivedFile`; :meth:`ReceivedFile.discard` removes it again.

    Raises:
        OSError: the folder cannot be written (a server problem).
    """
    name = safe_filename(filename)
    own = folder / uuid.uuid4().hex
    own.mkdir(parents=True)
    path = own / name
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("xb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except BaseException:
        shutil.rmtree(own, ignore_errors=True)
        raise
    return ReceivedFile(path, name, size, digest.hexdigest())


def remove_stale_uploads(folder: Path, *, older_than_s: float = 3600.0) -> int:
    """Remove what requests left in ``folder`` when their process died mid-way.

    A request removes its own files when it ends; only a killed server leaves any. Only
    folders untouched for ``older_than_s`` go, so a request in flight on another server
    process sharing the folder keeps its files.

    Returns:
        How many upload folders were removed.
    """
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in folder.iterdir():
        try:
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except OSError:  # gone already, or not ours to touch
            continue
    return removed
