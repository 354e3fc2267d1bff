"""Bytes of uploads and artifacts: in the database, or files under an artifact root."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import func, insert, literal_column, select
from sqlalchemy.orm import Session, defer

from service.errors import ServiceError
from service.store._tables import Blob

__all__ = ["BlobStore", "file_sha256"]

_CHUNK = 1 << 20
_KEEP_CONNECTION_BELOW = 16 << 20


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of the file at ``path`` (hex), read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _storage_error(root: Path, exc: OSError) -> ServiceError:
    return ServiceError(
        f"cannot write to the artifact root {root}: {exc.strerror}",
        code="storage_error",
        status=507,
    )


class BlobStore:
    """Stores bytes and gives them back by id.

    Without ``root`` the bytes go into the ``inferprune_blobs`` table, so any worker that
    can reach the database can read them. With ``root`` they are written as files named
    by their SHA-256 under that folder (shared storage every worker mounts) and the table
    holds only the path. Writes are atomic (temp file, then rename).

    Large uploads go through :meth:`put_file` and :meth:`save_as`, which stream: on an
    artifact root and on SQLite (incremental blob I/O) no more than a MiB is held in
    memory at once; PostgreSQL's ``bytea`` takes a value whole, so there one blob's
    bytes are in memory while its row is written.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def put(self, session: Session, data: bytes) -> Blob:
        """Store ``data`` and return its (flushed, uncommitted) row."""
        digest = hashlib.sha256(data).hexdigest()
        blob = Blob(id=uuid.uuid4().hex, sha256=digest, size=len(data))
        if self.root is None:
            blob.data = data
        else:
            blob.path = str(self._write_file(digest, lambda out: out.write(data)))
        session.add(blob)
        session.flush()
        return blob

    def put_file(self, session: Session, path: Path, *, sha256: str | None = None) -> Blob:
        """Store the bytes of the file at ``path`` and return its (flushed, uncommitted)
        row, reading the file in chunks rather than whole.

        Args:
            session: the session whose transaction holds the row.
            path: the file; it is copied, not moved, and may be removed afterwards.
            sha256: its SHA-256 if already known (computed while it was received).

        Raises:
            ServiceError: ``storage_error`` when the artifact root cannot be written.
        """
        size = path.stat().st_size
        digest = sha256 or file_sha256(path)
        blob_id = uuid.uuid4().hex
        if self.root is not None:

            def copy(out: BinaryIO) -> None:
                with path.open("rb") as source:
                    shutil.copyfileobj(source, out, _CHUNK)

            stored = self._write_file(digest, copy)
            blob = Blob(id=blob_id, sha256=digest, size=size, path=str(stored))
            session.add(blob)
            session.flush()
            return blob
        if session.get_bind().dialect.name == "sqlite":
            # reserve the bytes, then write them through SQLite's incremental blob I/O
            session.execute(
                insert(Blob).values(id=blob_id, sha256=digest, size=size, data=func.zeroblob(size))
            )
            if size:
                with path.open("rb") as source, self._sqlite_blob(session, blob_id) as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
            # the row without its bytes: they stay in the database
            return session.scalars(
                select(Blob).options(defer(Blob.data)).where(Blob.id == blob_id)
            ).one()
        blob = Blob(id=blob_id, sha256=digest, size=size, data=path.read_bytes())
        session.add(blob)
        session.flush()
        session.expire(blob, ["data"])  # the bytes leave memory with the flush
        if size > _KEEP_CONNECTION_BELOW:
            # libpq keeps its send buffer as large as the largest message it sent: close
            # this connection when the transaction ends instead of pooling it
            session.connection().connection.detach()
        return blob

    def save_as(self, session: Session, blob: Blob, target: Path) -> None:
        """Write the bytes of ``blob`` to the file ``target`` in chunks, checking their
        SHA-256 on the way (a damaged blob leaves no file behind).

        Raises:
            ServiceError: the bytes are missing or do not match their checksum.
            OSError: ``target`` cannot be written.
        """
        digest = hashlib.sha256()
        try:
            with target.open("wb") as out:
                for chunk in self._chunks(session, blob):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != blob.sha256:
                raise ServiceError(
                    f"blob {blob.id} is damaged (checksum mismatch)", code="storage_error"
                )
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def get(self, session: Session, blob_id: str) -> bytes:
        """Return the bytes of blob ``blob_id``.

        Raises:
            ServiceError: no such blob, or its file is missing or damaged.
        """
        blob = session.get(Blob, blob_id)
        if blob is None:
            raise ServiceError(f"blob {blob_id} does not exist", code="not_found", status=404)
        return self.read(blob)

    def read(self, blob: Blob) -> bytes:
        """Return the bytes of a blob row."""
        if blob.data is not None:
            return blob.data
        if blob.path is None:
            raise ServiceError(f"blob {blob.id} has no bytes", code="storage_error")
        try:
            data = Path(blob.path).read_bytes()
        except OSError as exc:
            raise ServiceError(
                f"cannot read {blob.path}: {exc.strerror}", code="storage_error", status=500
            ) from exc
        if hashlib.sha256(data).hexdigest() != blob.sha256:
            raise ServiceError(f"{blob.path} is damaged (checksum mismatch)", code="storage_error")
        return data

    # -- internals ----------------------------------------------------------------------
    def _write_file(self, digest: str, write: Callable[[BinaryIO], object]) -> Path:
        """Write a blob file named by ``digest`` under the root (once), atomically."""
        assert self.root is not None
        path = self.root / digest[:2] / digest
        if path.exists():
            return path
        tmp = path.with_name(f".{digest}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                write(out)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(self.root, exc) from exc
        return path

    @staticmethod
    def _sqlite_blob(session: Session, blob_id: str) -> BinaryIO:
        """Open the ``data`` cell of a blob row for incremental I/O on SQLite."""
        rowid = session.scalar(
            select(literal_column("rowid")).select_from(Blob).where(Blob.id == blob_id)
        )
        raw = cast(Any, session.connection().connection.driver_connection)  # sqlite3's
        return cast(BinaryIO, raw.blobopen(Blob.__tablename__, "data", rowid))

    def _chunks(self, session: Session, blob: Blob) -> Iterator[bytes]:
        if blob.path is not None:
            try:
                with Path(blob.path).open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        yield chunk
            except OSError as exc:
                raise ServiceError(
                    f"cannot read {blob.path}: {exc.strerror}", code="storage_error", status=500
                ) from exc
            return
        if session.get_bind().dialect.name == "sqlite":
            with self._sqlite_blob(session, blob.id) as source:
                while chunk := source.read(_CHUNK):
                    yield chunk
            return
        data = self.read(blob)
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]
