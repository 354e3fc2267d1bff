"""What the API process holds for its lifetime: engine, sessions, blobs, Optuna storage."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from search import optuna_storage
from service.settings import Settings
from service.store import BlobStore, engine_options

__all__ = ["AppState", "TokenCache"]


class TokenCache:
    """Remembers recently authenticated tokens for a few seconds (thread-safe), so that
    status polling does not hit the tokens table on every request."""

    def __init__(self, ttl_s: float = 30.0, size: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> str | None:
        """Return the cached tenant of a token hash, if fresh."""
        with self._lock:
            item = self._items.get(token_hash)
            if item is None or time.monotonic() - item[1] > self.ttl_s:
                return None
            return item[0]

    def put(self, token_hash: str, tenant: str) -> None:
        """Remember a token hash's tenant."""
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[token_hash] = (tenant, time.monotonic())


@dataclass
class AppState:
    """The API's long-lived objects (one per process)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    tokens: TokenCache = field(default_factory=TokenCache)
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
