"""Bytes of uploads and artifacts: in the database, or files under an artifact root."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.store._tables import Blob, BlobChunk

__all__ = ["BlobStore", "file_sha256"]

_CHUNK = 1 << 20


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

    Without ``root`` the bytes go into the database, a MiB per row of
    ``inferprune_blob_chunks``, so any worker that can reach the database can read them
    and no process holds more than a chunk of a large upload while writing or streaming
    it. With ``root`` they are written as files named by their SHA-256 under that folder
    (shared storage every worker mounts) and the table holds only the path. Writes are
    atomic: a file is renamed into place, chunks are rows of the caller's transaction.

    :meth:`put_file` and :meth:`save_as` stream; :meth:`put` and :meth:`read` take and
    give whole bytes (artifacts a worker has in memory anyway, weights it loads whole).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root

    def put(self, session: Session, data: bytes) -> Blob:
        """Store ``data`` and return its (flushed, uncommitted) row."""
        return self._put(session, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, session: Session, path: Path, *, sha256: str | None = None) -> Blob:
        """Store the bytes of the file at ``path`` and return its (flushed, uncommitted)
        row, reading the file a chunk at a time.

        Args:
            session: the session whose transaction holds the row.
            path: the file; it is copied, not moved, and may be removed afterwards.
            sha256: its SHA-256 if already known (computed while it was received).

        Raises:
            ServiceError: ``storage_error`` when the artifact root cannot be written.
        """
        digest = sha256 or file_sha256(path)
        with path.open("rb") as source:
            return self._put(session, source, path.stat().st_size, digest)

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
            ServiceError: no such blob, or its bytes are missing or damaged.
        """
        blob = session.get(Blob, blob_id)
        if blob is None:
            raise ServiceError(f"blob {blob_id} does not exist", code="not_found", status=404)
        return self.read(session, blob)

    def read(self, session: Session, blob: Blob) -> bytes:
        """Return the bytes of a blob row, checked against its SHA-256.

        Raises:
            ServiceError: the bytes are missing or damaged.
        """
        data = b"".join(self._chunks(session, blob))
        if hashlib.sha256(data).hexdigest() != blob.sha256:
            where = blob.path or f"blob {blob.id}"
            raise ServiceError(f"{where} is damaged (checksum mismatch)", code="storage_error")
        return data

    # -- internals ----------------------------------------------------------------------
    def _put(self, session: Session, source: BinaryIO, size: int, digest: str) -> Blob:
        blob = Blob(id=uuid.uuid4().hex, sha256=digest, size=size)
        if self.root is not None:
            blob.path = str(
                self._write_file(digest, lambda out: shutil.copyfileobj(source, out, _CHUNK))
            )
        session.add(blob)
        session.flush()
        if self.root is None:
            seq = 0
            while chunk := source.read(_CHUNK):
                # Core inserts: no ORM object keeps a chunk alive after its row is sent
                session.execute(insert(BlobChunk).values(blob_id=blob.id, seq=seq, data=chunk))
                seq += 1
        return blob

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

    def _chunks(self, session: Session, blob: Blob) -> Iterator[bytes]:
        """Yield the blob's bytes a chunk at a time, wherever they are."""
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
        inline = session.scalar(select(Blob.data).where(Blob.id == blob.id))
        if inline is not None:  # written before revision 0002: one value
            yield inline
            return
        seq = 0
        while True:  # one row per query: a chunk in memory at a time, on every driver
            piece = session.scalar(
                select(BlobChunk.data).where(BlobChunk.blob_id == blob.id, BlobChunk.seq == seq)
            )
            if piece is None:
                return
            yield piece
            seq += 1
