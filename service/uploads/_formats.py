"""Zip and tar readers that hand every member to an :class:`Extractor` for checking.

The format comes from the file's first bytes. Zip central directories are counted
before :mod:`zipfile` builds an object per entry, and tar metadata reads are capped, so
neither a huge entry count nor a pax header declaring gigabytes can exhaust memory
before the limits apply.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol, cast

from service.uploads._errors import UploadError

if TYPE_CHECKING:
    from service.uploads._archive import Extractor

__all__ = ["archive_kind", "iter_tar", "read_zip"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_COMPRESSED_TAR_MAGICS = {b"\x1f\x8b": "tar.gz", b"BZh": "tar.bz2", b"\xfd7zXZ\x00": "tar.xz"}
_SUPPORTED = "zip, tar, tar.gz (.tgz), tar.bz2 or tar.xz"
# legitimate pax / GNU long-name headers are a few KiB; tarfile reads them in one call
_MAX_METADATA_READ = 16 << 20
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    tarfile.TarError,
)
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_HEADER_SIZE = 46


def _damaged(detail: object) -> UploadError:
    text = str(detail).splitlines()[0][:200] if str(detail) else type(detail).__name__
    return UploadError("invalid_archive", f"the archive is damaged or truncated ({text})")


def archive_kind(path: Path) -> str:
    """Return ``zip``, ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz`` from the first bytes.

    Raises:
        UploadError: ``invalid_archive`` for anything else.
    """
    with path.open("rb") as handle:
        head = handle.read(512)
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    for magic, kind in _COMPRESSED_TAR_MAGICS.items():
        if head.startswith(magic):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    raise UploadError(
        "invalid_archive", f"{path.name} is not an archive this server reads ({_SUPPORTED})"
    )


class _Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def tell(self) -> int: ...


class _CheckedReader:
    """A read-only stream whose decoding errors become ``invalid_archive``.

    With ``max_read``, one read asking for more bytes than that is refused: tarfile
    reads a whole pax or long-name header at once, sized by an untrusted header field.
    """

    def __init__(self, raw: _Stream, max_read: int | None = None) -> None:
        self.raw = raw
        self.max_read = max_read

    def read(self, size: int = -1) -> bytes:
        if self.max_read is not None and not 0 <= size <= self.max_read:
            raise UploadError(
                "archive_too_large",
                f"the archive holds a metadata block of {size:,} bytes; at most "
                f"{self.max_read:,} are accepted",
            )
        try:
            return self.raw.read(size)
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        try:
            return self.raw.seek(offset, whence)
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None

    def tell(self) -> int:
        return self.raw.tell()


# -- zip ----------------------------------------------------------------------------------
def _zip_entry_count(handle: BinaryIO, limit: int) -> int:
    """Return how many central-directory entries the zip holds (counting stops past
    ``limit``), found the way :mod:`zipfile` finds them but without building objects."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    tail_len = min(size, _EOCD.size + 0xFFFF)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = tail_len - _EOCD.size
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06":
        at = tail.rfind(b"PK\x05\x06", 0, max(tail_len - _EOCD.size + 1, 0))
    if at < 0:
        raise _damaged("no end-of-central-directory record")
    eocd_pos = size - tail_len + at
    *_, cd_size, _cd_offset, _comment = _EOCD.unpack_from(tail, at)
    cd_end = eocd_pos
    locator_pos = eocd_pos - _EOCD64_LOCATOR.size
    if locator_pos >= 0:
        handle.seek(locator_pos)
        locator = handle.read(_EOCD64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            record_pos = locator_pos - _EOCD64.size
            handle.seek(max(record_pos, 0))
            record = handle.read(_EOCD64.size)
            if record_pos < 0 or record[:4] != b"PK\x06\x06":
                raise _damaged("broken zip64 end-of-central-directory record")
            cd_size = _EOCD64.unpack(record)[8]
            cd_end = record_pos
    if cd_size > cd_end:
        raise _damaged("the central directory is larger than the file")
    handle.seek(cd_end - cd_size)
    directory = handle.read(cd_size)
    count = pos = 0
    while pos + _CENTRAL_HEADER_SIZE <= len(directory) and count <= limit:
        if directory[pos : pos + 4] != b"PK\x01\x02":
            raise _damaged("bad central directory entry")
        name_len, extra_len, comment_len = struct.unpack_from("<3H", directory, pos + 28)
        pos += _CENTRAL_HEADER_SIZE + name_len + extra_len + comment_len
        count += 1
    return count


def _check_zip_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    if info.flag_bits & 0x1:
        raise UploadError(
            "invalid_archive",
            f"member {name!r} is encrypted; upload an archive without a password",
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadError(
            "unsafe_archive", f"member {name!r} is a symbolic link; links are not accepted"
        )
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise UploadError(
            "unsafe_archive", f"member {name!r} is a device, FIFO or socket, not a file"
        )


def read_zip(path: Path, extractor: Extractor) -> None:
    """Check every member of the zip ``path``, then extract them through ``extractor``.

    Raises:
        UploadError: as :func:`service.uploads.extract_archive`.
    """
    limit = extractor.limits.max_members
    with path.open("rb") as handle:
        if _zip_entry_count(handle, limit) > limit:
            raise extractor.too_many_members()
        handle.seek(0)
        try:
            archive = zipfile.ZipFile(handle)
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None
        with archive:
            admitted = []
            for info in archive.infolist():
                _check_zip_member(info)
                target = extractor.admit(
                    info.filename, is_dir=info.is_dir(), declared_size=info.file_size
                )
                if target is not None:
                    admitted.append((target, info))
            for target, info in admitted:
                if info.is_dir():
                    extractor.make_dir(target, info.filename)
                    continue
                try:
                    member = archive.open(info)
                except _READ_ERRORS as exc:
                    raise _damaged(exc) from None
                with member:
                    extractor.write_file(target, _CheckedReader(member), info.filename)


# -- tar ----------------------------------------------------------------------------------
def _decompressed(
    handle: BinaryIO, kind: str
) -> BinaryIO | gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(handle)
    if kind == "tar.xz":
        return lzma.LZMAFile(handle)
    return handle


def _check_tar_member(info: tarfile.TarInfo) -> None:
    name = info.name
    if info.issym() or info.islnk():
        which = "symbolic" if info.issym() else "hard"
        raise UploadError(
            "unsafe_archive",
            f"member {name!r} is a {which} link (to {info.linkname!r}); links are not accepted",
        )
    if info.ischr() or info.isblk() or info.isfifo():
        raise UploadError("unsafe_archive", f"member {name!r} is a device or FIFO, not a file")
    if not (info.isreg() or info.isdir()):
        raise UploadError("unsafe_archive", f"member {name!r} has unsupported type {info.type!r}")


def _second_opinion(info: tarfile.TarInfo, staging: Path) -> None:
    """Apply the standard library's ``data`` extraction filter too (its message would
    show this server's folders, so only its verdict is passed on)."""
    try:
        tarfile.data_filter(info, str(staging))
    except tarfile.FilterError as exc:
        raise UploadError(
            "unsafe_archive",
            f"member {info.name!r} is refused by tarfile's safety rules ({type(exc).__name__})",
        ) from None


def iter_tar(path: Path, kind: str, extractor: Extractor) -> None:
    """Check and extract the members of the tar ``path`` one by one through ``extractor``.

    Args:
        path: the archive.
        kind: ``tar``, ``tar.gz``, ``tar.bz2`` or ``tar.xz`` (from :func:`archive_kind`).
        extractor: checks and writes members.

    Raises:
        UploadError: as :func:`service.uploads.extract_archive`.
    """
    with path.open("rb") as handle, _decompressed(handle, kind) as stream:
        reader = _CheckedReader(stream, max_read=_MAX_METADATA_READ)
        try:
            archive = tarfile.open(fileobj=cast(IO[bytes], reader), mode="r:")
        except tarfile.ReadError as exc:
            if kind == "tar":
                raise _damaged(exc) from None
            raise UploadError(
                "invalid_archive",
                f"{path.name} is compressed ({kind.removeprefix('tar.')}) but holds no tar "
                f"archive; upload {_SUPPORTED}",
            ) from None
        with archive:
            while True:
                try:
                    info = archive.next()
                except tarfile.TarError as exc:
                    raise _damaged(exc) from None
                if info is None:
                    return
                _check_tar_member(info)
                target = extractor.admit(info.name, is_dir=info.isdir(), declared_size=info.size)
                if target is None:
                    continue
                _second_opinion(info, extractor.staging)
                if info.isdir():
                    extractor.make_dir(target, info.name)
                    continue
                member = archive.extractfile(info)
                if member is None:  # not a regular file after all
                    raise _damaged(f"member {info.name!r} has no data")
                with member:  # tarfile reports truncated data as its own ReadError
                    extractor.write_file(target, _CheckedReader(member), info.name)
