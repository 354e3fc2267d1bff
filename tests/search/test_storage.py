"""The study storage: SQLite files in WAL mode, other URLs passed through; a trial's
attributes written several to a transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy import event, text

from search import optuna_storage
from search.storage import write_user_attrs


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


# -- several attributes in one transaction ------------------------------------------------


def _counting(storage: optuna.storages.RDBStorage) -> dict[str, int]:
    """Count the commits and SQL statements on ``storage``'s engine from now on."""
    counts = {"commits": 0, "statements": 0}
    event.listen(
        storage.engine, "commit", lambda _c: counts.__setitem__("commits", counts["commits"] + 1)
    )
    event.listen(
        storage.engine,
        "before_cursor_execute",
        lambda *_a: counts.__setitem__("statements", counts["statements"] + 1),
    )
    return counts


ATTRS = {
    "macs": 12_345,
    "plan": {"a": 8, "b": 16},
    "latency_ms": None,
    "rung_accuracy": [0.5, 0.75],
}


def test_a_trials_attributes_are_written_in_one_statement_and_one_commit(
    empty_database_url: str,
) -> None:
    storage = optuna_storage(empty_database_url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.set_user_attr("macs", 1)  # an attribute that exists is overwritten
    counts = _counting(storage)

    write_user_attrs(trial, ATTRS)

    assert counts == {"commits": 1, "statements": 2}  # the trial's state, one upsert
    assert trial.user_attrs == ATTRS  # the trial's own copy, as set_user_attr keeps it
    again = optuna.load_study(
        study_name="s", storage=optuna.storages.RDBStorage(empty_database_url)
    )
    assert again.trials[0].user_attrs == ATTRS


def test_nothing_is_written_to_a_finished_trial_or_when_a_value_is_not_json(
    empty_database_url: str,
) -> None:
    storage = optuna_storage(empty_database_url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with pytest.raises(TypeError):
        write_user_attrs(trial, {"macs": 1, "model": object()})
    finished = study.ask()
    study.tell(finished, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_user_attrs(finished, {"macs": 1})

    stored = {t.number: t.user_attrs for t in study.get_trials()}
    assert stored == {0: {}, 1: {}}
    assert trial.user_attrs == {}


def test_another_storage_gets_the_attributes_one_by_one() -> None:
    study = optuna.create_study()  # in memory: Optuna's own set_user_attr
    trial = study.ask()

    write_user_attrs(trial, ATTRS)

    assert trial.user_attrs == ATTRS
    assert study.get_trials()[0].user_attrs == ATTRS
