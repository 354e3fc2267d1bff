"""A job's inputs on a worker: uploads fetched from the store, problems cached per job."""

from __future__ import annotations

import logging
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, defer, sessionmaker

import search
from models.errors import ModelsError
from search import (
    JobSpec,
    PruningProblem,
    Sensitivity,
    job_sensitivity,
    load_onnx_problem,
    load_problem,
    make_sampler,
    open_study,
)
from search.errors import SearchError
from service.store import Blob, BlobStore, Claim, engine_options
from service.uploads import safe_filename
from service.worker._remote_meter import DeviceMeters
from service.worker._sensitivity_cache import StoreSensitivityCache

__all__ = ["JobInputs", "LoadedJob", "ProblemCache", "hide_upload_paths", "optuna_storage"]

logger = logging.getLogger(__name__)


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Return Optuna's storage on the store's database, with the same connection options."""
    return search.optuna_storage(url, engine_options(url))


class JobInputs:
    """Fetches a job's uploads into this worker's data folder.

    Weights are handed over as bytes. An uploaded data set is streamed (never held
    whole) to ``<data_dir>/uploads/<sha256>/<its file name>``; an archive is extracted
    there (safely) once and reused by later trials and jobs with the same bytes. Its
    file and top folder keep the names the uploader gave them, so that messages about
    them can say ``d.npz`` (see :func:`hide_upload_paths`).
    """

    def __init__(self, blobs: BlobStore, data_dir: Path) -> None:
        self.blobs = blobs
        self.root = data_dir / "uploads"

    def weights(self, session: Session, claim: Claim) -> bytes | None:
        """Return the job's uploaded weights, or None."""
        if claim.weights_blob_id is None:
            return None
        return self.blobs.get(session, claim.weights_blob_id)

    def dataset(self, session: Session, claim: Claim) -> str | None:
        """Return the data set name workers load the upload by (``npz:…`` or
        ``imagefolder:…``), or None when the job uses a named data set."""
        if claim.dataset_blob_id is None:
            return None
        blob = session.scalars(
            select(Blob).options(defer(Blob.data)).where(Blob.id == claim.dataset_blob_id)
        ).one()
        folder = self.root / blob.sha256
        name = safe_filename(claim.dataset_filename, "dataset.npz")
        target = folder / name
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.partial"
            self.blobs.save_as(session, blob, tmp)  # checks the SHA-256 on the way
            tmp.replace(target)
        if target.suffix == ".npz":
            return f"npz:{target}"
        extracted = folder / "extracted"
        if not extracted.exists():
            from service.uploads import extract_archive

            root = extract_archive(target, folder / "extracting")
            (folder / "extracting").rename(extracted)
            relative = root.relative_to(folder / "extracting")
            (folder / "root.txt").write_text(str(relative))
        relative_root = (folder / "root.txt").read_text().strip()
        return f"imagefolder:{extracted / relative_root}"


def hide_upload_paths(exc: BaseException, uploads: Path | None) -> BaseException:
    """Return ``exc`` with this worker's upload folders taken out of its message.

    The job's owner knows an upload by its file name (``d.npz``) and the folder inside
    it (``pets/cat``), not by ``/var/lib/inferprune/uploads/<sha256>/``: that prefix
    (and the ``extracted/`` folder of an archive) is removed from every string argument.
    The exception object is kept, so its type (and what handles it) stays the same.

    Args:
        exc: the error loading a job's problem.
        uploads: the worker's upload folder (default: nothing to hide but the pattern
            ``.../uploads/<sha256>/`` anywhere).
    """
    where = re.escape(str(uploads)) if uploads is not None else r"\S*/uploads"
    pattern = re.compile(rf"{where}/[0-9a-f]{{64}}/(?:extracted/)?")
    exc.args = tuple(pattern.sub("", a) if isinstance(a, str) else a for a in exc.args)
    if isinstance(exc, OSError) and exc.filename is not None:
        exc.filename = pattern.sub("", str(exc.filename))
    return exc


@dataclass(frozen=True)
class LoadedJob:
    """A job as this worker holds it: its problem and its study, with this worker's
    sampler (whose random state must live as long as the worker serves the job)."""

    problem: PruningProblem
    study: optuna.Study


class ProblemCache:
    """Keeps the loaded problem and study of the last few jobs in this process.

    Loading a problem (model, data, channel scores, baseline) costs seconds; every
    trial of a job needs the same one, so a worker keeps it while it serves the job.
    The sampler is seeded with the job's seed mixed with the worker id, so that two
    workers never propose the same random candidates.
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        worker_id: str,
        size: int = 2,
        uploads: Path | None = None,
        sessions: sessionmaker[Session] | None = None,
        device: torch.device | None = None,
        meters: DeviceMeters | None = None,
    ) -> None:
        self.storage = storage
        self.meters = meters
        self.device = device if device is not None else torch.device("cpu")
        self.worker_id = worker_id
        self.size = size
        self.uploads = uploads
        self.sessions = sessions
        self._items: OrderedDict[str, LoadedJob] = OrderedDict()

    def get(
        self,
        claim: Claim,
        spec: JobSpec,
        *,
        weights: bytes | None,
        dataset: str | None,
        data_root: Path | None,
    ) -> LoadedJob:
        """Return the job's problem and study, loading and creating them if needed."""
        if claim.job_id in self._items:
            self._items.move_to_end(claim.job_id)
            return self._items[claim.job_id]
        meter_factory = None
        if spec.latency.target is not None:
            if self.meters is None:
                raise SearchError("latency.target: this worker cannot reach device agents")
            meter_factory = self.meters.factory(claim.tenant, claim.job_id)
        try:
            if spec.arch is None:  # the job's weights are its uploaded ONNX model
                assert weights is not None, "the API accepts no job without arch or model"
                problem = load_onnx_problem(
                    spec,
                    weights,
                    dataset=dataset,
                    data_root=data_root,
                    device=self.device,
                    meter_factory=meter_factory,
                )
            else:
                problem = load_problem(
                    spec,
                    weights=weights,
                    dataset=dataset,
                    data_root=data_root,
                    device=self.device,
                    meter_factory=meter_factory,
                )
        except (ModelsError, SearchError, OSError) as exc:
            raise hide_upload_paths(exc, self.uploads) from None
        mixed = spec.model_copy(
            update={
                "search": spec.search.model_copy(
                    update={
                        "seed": (spec.search.seed + zlib.crc32(self.worker_id.encode())) % 2**31
                    }
                )
            }
        )

        def sensitivity() -> Sensitivity | None:
            cache = None
            if self.sessions is not None:
                cache = StoreSensitivityCache.for_job(self.sessions, problem, weights, dataset)
            return job_sensitivity(problem, cache)

        # the first worker creates the study (and scans, unless a scan is cached)
        study = open_study(problem, self.storage, claim.study_name, sensitivity=sensitivity)
        study.sampler = make_sampler(mixed)
        loaded = LoadedJob(problem, study)
        self._items[claim.job_id] = loaded
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return loaded

    def drop(self, job_id: str) -> None:
        """Forget a job (it finished)."""
        self._items.pop(job_id, None)
