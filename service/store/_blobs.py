"""Bytes of uploads and artifacts: in the database, or files under an artifact root."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.store._tables import Blob

__all__ = ["BlobStore"]


class BlobStore:
    """Stores bytes and gives them back by id.

    Without ``root`` the bytes go into the ``inferprune_blobs`` table, so any worker that
    can reach the database can read them. With ``root`` they are written as files named
    by their SHA-256 under that folder (shared storage every worker mounts) and the table
    holds only the path. Writes are atomic (temp file, then rename).
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
            path = self.root / digest[:2] / digest
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{digest}.{uuid.uuid4().hex}.tmp")
                try:
                    tmp.write_bytes(data)
                    os.replace(tmp, path)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    raise ServiceError(
                        f"cannot write to the artifact root {self.root}: {exc.strerror}",
                        code="storage_error",
                        status=507,
                    ) from exc
            blob.path = str(path)
        session.add(blob)
        session.flush()
        return blob

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
