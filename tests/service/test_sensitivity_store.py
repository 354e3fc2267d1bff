"""Sensitivity scans cached in the store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings
from service.store import (
    SensitivityKey,
    SensitivityScan,
    get_sensitivity,
    make_engine,
    make_session_factory,
    put_sensitivity,
)

KEY = SensitivityKey(
    weights_sha256="ab" * 32,
    arch="resnet20_cifar",
    num_classes=10,
    input_shape=(3, 32, 32),
    dataset="digits",
    criterion="l1",
    round_to=8,
    seed=0,
    fractions=(0.75, 0.5, 0.25),
)

RESULT: dict[str, Any] = {
    "format": 1,
    "criterion": "l1",
    "baseline_accuracy": 0.9,
    "reference_accuracy": 0.89,
    "baseline_macs": 40_000_000,
    "fractions": [0.75, 0.5, 0.25],
    "seconds": 12.5,
    "groups": [
        {
            "name": "conv1",
            "channels": 16,
            "points": [{"width": 8, "macs": 30_000_000, "val_accuracy": 0.7}],
        }
    ],
}


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(SensitivityScan)) or 0)


def test_a_stored_scan_is_found_by_its_key(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert get_sensitivity(session, KEY) is None
        assert put_sensitivity(session, KEY, RESULT) is True
    with sessions() as session:  # a later job, another session
        assert get_sensitivity(session, KEY) == RESULT


def test_storing_the_same_key_again_keeps_the_first(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert put_sensitivity(session, KEY, RESULT)
    later = RESULT | {"seconds": 99.0}
    with sessions.begin() as session:
        assert put_sensitivity(session, KEY, later) is False
    assert _count(sessions) == 1
    with sessions() as session:
        assert get_sensitivity(session, KEY) == RESULT


@pytest.mark.parametrize(
    "change",
    [
        {"weights_sha256": "cd" * 32},
        {"arch": "resnet32_cifar"},
        {"num_classes": 100},
        {"input_shape": (3, 28, 28)},
        {"dataset": "fashion_mnist"},
        {"criterion": "fpgm"},
        {"round_to": 4},
        {"seed": 1},
        {"fractions": (0.5,)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_part_of_the_key_tells_scans_apart(
    sessions: sessionmaker[Session], change: dict[str, Any]
) -> None:
    other = dataclasses.replace(KEY, **change)
    with sessions.begin() as session:
        put_sensitivity(session, KEY, RESULT)
    with sessions.begin() as session:
        assert get_sensitivity(session, other) is None
        assert put_sensitivity(session, other, RESULT | {"criterion": "other"}) is True
    assert _count(sessions) == 2
    with sessions() as session:
        assert get_sensitivity(session, KEY) == RESULT


def test_fractions_written_differently_are_the_same_key(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        put_sensitivity(session, KEY, RESULT)
    same = dataclasses.replace(KEY, fractions=(3 / 4, 1 / 2, 1 / 4))
    with sessions() as session:
        assert get_sensitivity(session, same) == RESULT
