"""Large uploads go from the request to disk to the store in chunks, never whole."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import resource
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import defer

from service.settings import Settings
from service.store import Blob, BlobStore, make_engine, make_session_factory
from service.uploads import receive_file, safe_filename

_MIB = 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _now_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB


def _random_file(path: Path, mib: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(mib):
            chunk = os.urandom(_MIB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def test_receive_file_streams_and_hashes(tmp_path: Path) -> None:
    data = os.urandom(3 * _MIB + 17)
    received = receive_file(io.BytesIO(data), tmp_path / "incoming", "../../etc/passwd")
    assert received.filename == "passwd" and received.path.parent.parent == tmp_path / "incoming"
    assert received.size == len(data) and received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.path.read_bytes() == data
    received.discard()
    assert not any((tmp_path / "incoming").iterdir())


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("d.npz", "d.npz"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("C:\\Users\\me\\pets.zip", "pets.zip"),
        (".hidden.tar", "hidden.tar"),
        ("a b/c;d.npz", "c_d.npz"),
        ("x" * 500 + ".npz", "x" * 116 + ".npz"),
    ],
)
def test_client_file_names_are_made_safe(name: str | None, safe: str) -> None:
    assert safe_filename(name) == safe


@pytest.mark.parametrize("where", ["database", "artifact root"])
def test_put_file_and_save_as_round_trip_without_holding_the_bytes(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    store = BlobStore(tmp_path / "artifacts" if where == "artifact root" else None)
    source = tmp_path / "upload.bin"
    digest = _random_file(source, 64)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    gc.collect()
    before_peak, before_now = _peak_mib(), _now_mib()
    with sessions.begin() as session:
        blob_id = store.put_file(session, source, sha256=digest).id
    gc.collect()
    held = _now_mib() - before_now
    grew = _peak_mib() - before_peak
    with sessions() as session:
        blob = session.scalars(
            select(Blob).options(defer(Blob.data)).where(Blob.id == blob_id)
        ).one()
        assert (blob.sha256, blob.size) == (digest, 64 * _MIB)
        target = tmp_path / "copy.bin"
        store.save_as(session, blob, target)
    engine.dispose()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert held < 16, f"{held:.0f} MiB still held after storing a 64 MiB upload"
    assert grew < 16, f"storing a 64 MiB file in the {where} took {grew:.0f} MiB"


def test_save_as_refuses_a_damaged_blob_and_leaves_no_file(
    settings: Settings, tmp_path: Path
) -> None:
    from service.errors import ServiceError

    store = BlobStore(tmp_path / "artifacts")
    engine = make_engine(settings.database_url)
    with make_session_factory(engine).begin() as session:
        blob = store.put(session, b"the original bytes")
        assert blob.path is not None
        Path(blob.path).write_bytes(b"something else")
        with pytest.raises(ServiceError, match="checksum"):
            store.save_as(session, blob, tmp_path / "out.bin")
    engine.dispose()
    assert not (tmp_path / "out.bin").exists()


def test_uploads_a_killed_server_left_behind_are_removed_and_fresh_ones_kept(
    tmp_path: Path,
) -> None:
    import time

    from service.uploads import remove_stale_uploads

    incoming = tmp_path / "incoming"
    stale, fresh = incoming / "stale", incoming / "fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "weights.safetensors").write_bytes(b"x" * 10)
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert remove_stale_uploads(incoming) == 1
    assert not stale.exists() and (fresh / "weights.safetensors").exists()
    assert remove_stale_uploads(tmp_path / "missing") == 0


def test_deleting_a_blob_deletes_its_chunks(settings: Settings) -> None:
    from sqlalchemy import delete, func

    from service.store import BlobChunk

    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    store = BlobStore()
    with sessions.begin() as session:
        blob = store.put(session, os.urandom(3 * _MIB + 5))
        assert store.read(session, blob)[-5:] and blob.size == 3 * _MIB + 5
        chunks = session.scalar(select(func.count()).where(BlobChunk.blob_id == blob.id))
        assert chunks == 4
        session.execute(delete(Blob).where(Blob.id == blob.id))
        assert session.scalar(select(func.count()).select_from(BlobChunk)) == 0
    engine.dispose()
