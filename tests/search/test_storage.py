"""The study storage: SQLite files in WAL mode, other URLs passed through."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy import text

from search import optuna_storage


def _pragma(storage: optuna.storages.RDBStorage, name: str) -> object:
    with storage.engine.connect() as connection:
        return connection.execute(text(f"PRAGMA {name}")).scalar()


def test_a_sqlite_file_is_opened_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    storage = optuna_storage(f"sqlite:///{tmp_path / 'study.db'}")

    assert _pragma(storage, "journal_mode") == "wal"
    assert _pragma(storage, "synchronous") == 1  # NORMAL
    assert _pragma(storage, "busy_timeout") == 30_000


def test_a_study_written_through_it_reads_back_from_a_plain_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=optuna_storage(url), study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)

    again = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_an_in_memory_sqlite_url_keeps_its_database(tmp_path: Path) -> None:
    storage = optuna_storage("sqlite://")
    study = optuna.create_study(storage=storage, study_name="memory")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)

    assert len(optuna.load_study(study_name="memory", storage=storage).trials) == 2
