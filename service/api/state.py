"""What the API process holds for its lifetime: engine, sessions, blobs, Optuna storage."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from search import optuna_storage
from service.settings import Settings
from service.store import BlobStore, engine_options

__all__ = ["AppState"]


@dataclass
class AppState:
    """The API's long-lived objects (one per process)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    _storage: Any = None
    _storage_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """Optuna's storage on the same database, created on first use."""
        with self._storage_lock:
            if self._storage is None:
                url = self.settings.database_url
                self._storage = optuna_storage(url, engine_options(url))
            return self._storage
