"""Safe extraction of uploaded zip and tar archives.

Nothing here calls ``extractall``: every member is checked (name, type, declared size)
before it is written, and its bytes are counted while they are written, since sizes in
headers can lie. Members land in a fresh staging folder inside the destination that is
moved into place in one rename once the whole archive passed, and removed otherwise.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from service.uploads._errors import UploadError
from service.uploads._formats import archive_kind, iter_tar, read_zip

__all__ = ["extract_archive"]

_CHUNK = 1 << 20
# Finder's resource-fork folder and folder-view files: not data, and __MACOSX would look
# like one more class folder to imagefolder
_SKIPPED_DIRS = frozenset({"__MACOSX"})
_SKIPPED_FILES = frozenset({".DS_Store", "Thumbs.db"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_ARCHIVE_SUFFIX = re.compile(r"(\.tar)?\.(zip|tar|tgz|tbz2?|txz|gz|bz2|xz)$", re.IGNORECASE)


class Readable(Protocol):
    """A binary stream to copy from."""

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes; empty at the end."""
        ...


@dataclass(frozen=True)
class Limits:
    """How much an archive may unpack to.

    Attributes:
        max_members: entries of any kind (files, folders, skipped ones).
        max_total_bytes: uncompressed bytes of all files together.
        max_member_bytes: uncompressed bytes of any one file.
    """

    max_members: int
    max_total_bytes: int
    max_member_bytes: int


def refuse(code: str, message: str) -> UploadError:
    """Return the :class:`UploadError` for an archive (``code`` is ``*_archive``)."""
    return UploadError(code, message)


class Extractor:
    """Writes checked members into a staging folder and enforces the limits.

    Format readers call :meth:`admit` for every entry (in archive order, before writing
    any of its bytes), then :meth:`write_file` / :meth:`make_dir` for the admitted ones.
    Not thread-safe: one archive, one extractor.
    """

    def __init__(self, staging: Path, limits: Limits) -> None:
        self.staging = staging
        self.limits = limits
        self._root = staging.resolve()
        self._files: set[PurePosixPath] = set()
        self._dirs: set[PurePosixPath] = set()
        self.members = 0
        self.declared_bytes = 0
        self.written_bytes = 0

    @property
    def file_count(self) -> int:
        """Files admitted so far."""
        return len(self._files)

    def admit(self, name: str, *, is_dir: bool, declared_size: int) -> Path | None:
        """Check one entry and return where it goes, or None for an entry to skip.

        Raises:
            UploadError: too many entries, an unsafe name, a duplicate, or a declared size
                over the limits.
        """
        self.members += 1
        if self.members > self.limits.max_members:
            raise self.too_many_members()
        relative = safe_relative_path(name)
        if relative is None or relative.parts[0] in _SKIPPED_DIRS:
            return None
        if not is_dir and relative.name in _SKIPPED_FILES:
            return None
        if relative in self._files or (not is_dir and relative in self._dirs):
            raise refuse("invalid_archive", f"the archive holds {name!r} twice")
        target = self.staging.joinpath(*relative.parts)
        resolved = Path(os.path.normpath(self._root.joinpath(*relative.parts)))
        if not resolved.is_relative_to(self._root):  # unreachable without "..": belt and braces
            raise refuse("unsafe_archive", f"member {name!r} would land outside the destination")
        if is_dir:
            self._dirs.add(relative)
            return target
        if declared_size > self.limits.max_member_bytes:
            raise self._member_too_large(name, declared_size)
        self.declared_bytes += declared_size
        if self.declared_bytes > self.limits.max_total_bytes:
            raise self._total_too_large()
        self._files.add(relative)
        self._dirs.update(relative.parents)
        return target

    def make_dir(self, target: Path, name: str) -> None:
        """Create an admitted folder entry."""
        with _conflicts_refused(name):
            target.mkdir(parents=True, exist_ok=True)

    def write_file(self, target: Path, source: Readable, name: str) -> None:
        """Copy an admitted file's bytes to ``target``, counting them against the limits.

        Raises:
            UploadError: the file or the archive unpacks to more than allowed (whatever
                the headers said), or the entry clashes with another.
        """
        written = 0
        with _conflicts_refused(name):
            target.parent.mkdir(parents=True, exist_ok=True)
            out = target.open("xb")  # "x": never reuse or follow an existing entry
        with out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.written_bytes += len(chunk)
                if written > self.limits.max_member_bytes:
                    raise self._member_too_large(name, written, at_least=True)
                if self.written_bytes > self.limits.max_total_bytes:
                    raise self._total_too_large()
                out.write(chunk)

    def too_many_members(self) -> UploadError:
        """Return the error for an archive with more entries than allowed."""
        return refuse(
            "archive_too_large",
            f"the archive has more than {self.limits.max_members:,} entries; "
            "split it or pack fewer, larger files",
        )

    def _member_too_large(self, name: str, size: int, *, at_least: bool = False) -> UploadError:
        more = "more than " if at_least else ""
        return refuse(
            "archive_too_large",
            f"member {name!r} unpacks to {more}{size:,} bytes; at most "
            f"{self.limits.max_member_bytes:,} bytes per file are accepted",
        )

    def _total_too_large(self) -> UploadError:
        return refuse(
            "archive_too_large",
            f"the archive unpacks to more than {self.limits.max_total_bytes:,} bytes, the "
            "most accepted; upload a smaller data set",
        )


@contextmanager
def _conflicts_refused(name: str) -> Iterator[None]:
    """Turn file-vs-folder clashes and over-long names into :class:`UploadError`."""
    try:
        yield
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise refuse("invalid_archive", f"member {name!r} clashes with another entry") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise refuse("invalid_archive", f"member name {name[:80]!r}... is too long") from None
        raise


def safe_relative_path(name: str) -> PurePosixPath | None:
    """Return a member name as a relative path, or None for the archive's root entry.

    Backslashes count as separators (Windows tools write them); ``.`` parts are dropped.

    Raises:
        UploadError: ``unsafe_archive`` for an absolute path, a drive letter, a ``..``
            part or a NUL byte.
    """
    text = name.replace("\\", "/")
    if "\x00" in text:
        raise refuse("unsafe_archive", f"member name {name!r} contains a NUL byte")
    if text.startswith("/") or _DRIVE.match(text):
        raise refuse("unsafe_archive", f"member {name!r} has an absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refuse("unsafe_archive", f"member {name!r} climbs out of the archive with '..'")
    return PurePosixPath(*parts) if parts else None


def extract_archive(
    path: Path,
    dest: Path,
    *,
    max_members: int = 100_000,
    max_total_bytes: int = 4 << 30,
    max_member_bytes: int = 512 << 20,
) -> Path:
    """Extract a zip or tar archive under ``dest`` safely and return its root folder.

    The format is read from the file's first bytes, not its name: zip, tar, and tar
    compressed with gzip, bzip2 or xz. Members go to a fresh staging folder inside
    ``dest`` that moves into place (one rename) only once every member passed, so a
    refused archive leaves ``dest`` as it was (a ``dest`` created here is removed again).
    Folders named ``__MACOSX`` and ``.DS_Store`` / ``Thumbs.db`` files are skipped.
    File modes, owners and times in the archive are ignored.

    Args:
        path: the archive.
        dest: folder to extract under; created if missing.
        max_members: most entries accepted (counted before anything is unpacked).
        max_total_bytes: most uncompressed bytes of all files together.
        max_member_bytes: most uncompressed bytes of one file.

    Returns:
        The archive's single top-level folder (as ``dest/<folder>``) when it has exactly
        one, otherwise a new folder ``dest/<archive name>`` holding its entries. Suffixed
        ``-1``, ``-2``, ... when that name is taken.

    Raises:
        UploadError: ``invalid_archive`` (not a supported archive, damaged, encrypted,
            empty, clashing entries), ``unsafe_archive`` (absolute paths, ``..``,
            symbolic or hard links, devices, FIFOs) or ``archive_too_large`` (too many
            entries, or more bytes than allowed, declared or actually unpacked).
        OSError: the destination cannot be written (a server problem, not the upload's).
    """
    limits = Limits(max_members, max_total_bytes, max_member_bytes)
    kind = archive_kind(path)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
    try:
        extractor = Extractor(staging, limits)
        if kind == "zip":
            read_zip(path, extractor)
        else:
            iter_tar(path, kind, extractor)
        if extractor.file_count == 0:
            raise refuse("invalid_archive", "the archive holds no files")
        return _move_into_place(staging, dest, _fallback_name(path))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _fallback_name(path: Path) -> str:
    stem = _ARCHIVE_SUFFIX.sub("", path.name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")
    return stem or "archive"


def _move_into_place(staging: Path, dest: Path, fallback: str) -> Path:
    entries = list(staging.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        source, name = entries[0], entries[0].name
    else:
        source, name = staging, fallback
    target = dest / name
    suffix = 0
    while target.exists():
        suffix += 1
        target = dest / f"{name}-{suffix}"
    source.rename(target)
    if source is not staging:
        staging.rmdir()
    return target
