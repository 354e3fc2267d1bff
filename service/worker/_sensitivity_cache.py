"""Sensitivity scans cached in the store, so the next job on the same model reuses one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from search import PruningProblem
from search.sensitivity import DEFAULT_FRACTIONS
from service.store import SensitivityKey, file_sha256, get_sensitivity, put_sensitivity
from service.worker._retry import retry_database

__all__ = ["StoreSensitivityCache"]


class StoreSensitivityCache:
    """A :class:`search.SensitivityCache` over the store's ``inferprune_sensitivity``
    table, bound to one model, data set and scan settings."""

    def __init__(self, sessions: sessionmaker[Session], key: SensitivityKey) -> None:
        self.sessions = sessions
        self.key = key

    @classmethod
    def for_job(
        cls,
        sessions: sessionmaker[Session],
        problem: PruningProblem,
        weights: bytes | None,
        dataset: str | None,
    ) -> StoreSensitivityCache | None:
        """Return the cache of a job's scan, or None for a job without weights (a random
        model's scan is not worth keeping). An uploaded data set is known by its
        contents' SHA-256, a public one by its name."""
        if weights is None:
            return None
        spec = problem.spec
        data_name = file_sha256(Path(dataset)) if dataset else spec.dataset
        key = SensitivityKey(
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            arch=problem.info.arch,
            num_classes=problem.info.num_classes,
            input_shape=problem.input_shape,
            dataset=data_name,
            criterion=spec.pruning.criterion,
            round_to=spec.pruning.round_to,
            seed=spec.search.seed,
            fractions=DEFAULT_FRACTIONS,
        )
        return cls(sessions, key)

    def get(self) -> dict[str, Any] | None:
        """Return the stored scan, or None."""
        with self.sessions() as session:
            return get_sensitivity(session, self.key)

    def put(self, scan: dict[str, Any]) -> None:
        """Store ``scan`` unless a scan is stored already."""

        def store() -> None:
            with self.sessions.begin() as session:
                put_sensitivity(session, self.key, scan)

        retry_database(store, what="store the sensitivity scan")
