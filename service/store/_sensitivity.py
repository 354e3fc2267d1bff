"""Cached sensitivity scans: one per model, data set and scan settings, reused by later jobs.

A scan (``search.Sensitivity``) depends on the weights, the data it was evaluated on,
the criterion that picks the channels, the channel step, the seed of the data split
and of the recalibration batches, and the fractions scanned; not on the budget. The
key holds exactly those, so any job on the same model may reuse the stored result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.store._tables import SensitivityScan

__all__ = ["SensitivityKey", "get_sensitivity", "put_sensitivity"]


@dataclass(frozen=True)
class SensitivityKey:
    """What a sensitivity scan depends on.

    Attributes:
        weights_sha256: SHA-256 (hex) of the unpruned weights as uploaded.
        arch: architecture name.
        num_classes: classifier outputs.
        input_shape: (C, H, W) of one input.
        dataset: the data set's name, or the SHA-256 of an uploaded one (a file name
            says nothing about its contents).
        criterion: channel criterion.
        round_to: channel multiple.
        seed: the job's seed (data split, recalibration batches).
        fractions: the kept fractions scanned.
    """

    weights_sha256: str
    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    dataset: str
    criterion: str
    round_to: int
    seed: int
    fractions: tuple[float, ...]

    def columns(self) -> dict[str, Any]:
        """Return the key as the table's column values."""
        return {
            "weights_sha256": self.weights_sha256,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_shape": "x".join(str(n) for n in self.input_shape),
            "dataset": self.dataset,
            "criterion": self.criterion,
            "round_to": self.round_to,
            "seed": self.seed,
            # repr of a float round-trips, so equal fractions always give equal text
            "fractions": ",".join(repr(float(f)) for f in self.fractions),
        }


def get_sensitivity(session: Session, key: SensitivityKey) -> dict[str, Any] | None:
    """Return the stored scan for ``key`` (as ``Sensitivity.to_dict()`` wrote it), or None.

    The caller validates it (``Sensitivity.from_dict``): the store keeps JSON, not trust.
    """
    columns = key.columns()
    row = session.scalar(
        select(SensitivityScan).where(
            *(getattr(SensitivityScan, name) == value for name, value in columns.items())
        )
    )
    return None if row is None else dict(row.result)


def put_sensitivity(session: Session, key: SensitivityKey, result: dict[str, Any]) -> bool:
    """Store ``result`` as the scan for ``key`` unless one is stored already.

    One statement (``INSERT … ON CONFLICT DO NOTHING``), so two workers that finish the
    same scan at once both succeed and the first result stays.

    Returns:
        True if this call stored it, False if the key already had a scan.
    """
    values = key.columns() | {"result": result}
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = (
        module.insert(SensitivityScan)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(SensitivityScan.id)
    )
    return session.execute(statement).scalar() is not None
