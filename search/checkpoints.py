"""A candidate's weights between rungs: what it trained so far, and where it is kept.

A multi-fidelity trial saves its pruned model after every rung, with its
:class:`Lineage` (steps trained, rungs done, the history of every training segment) in
the checkpoint's metadata. A candidate continued later (by the final fine-tune, or by
another worker after this one died) is rebuilt from the checkpoint and trains on from
the step it reached. Where checkpoints live is a :class:`CheckpointStore`: a dict in
memory, a folder (``inferprune prune``), or the service's artifact store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from models.io import CheckpointInfo, checkpoint_bytes, read_checkpoint_info, read_checkpoint_state
from models.prune import Plan, complete_plan, widths_of
from search.hybrid import kernels_removed
from search.problem import PruningProblem, build_candidate

__all__ = [
    "CheckpointStore",
    "FolderCheckpoints",
    "Lineage",
    "MemoryCheckpoints",
    "candidate_info",
    "checkpoint_info",
    "restore_candidate",
    "save_candidate",
]

_LINEAGE_KEY = "lineage"
_SEARCHED_PLAN_KEY = "searched_plan"


@dataclass(frozen=True)
class Lineage:
    """A candidate's training since it was pruned, carried from rung to rung.

    Attributes:
        trial: the trial that trained it last (whose checkpoint holds it).
        rung: the last search rung finished (-1: none yet).
        steps: optimizer steps trained since pruning, every rung and trial together.
        epochs: the same in epochs of the training split.
        history: one record per training segment, oldest first:
            ``{"trial", "stage", "steps": [first, end], "epochs", "lr"}``, where
            ``stage`` is ``rung K`` or ``final``.
    """

    trial: int
    rung: int = -1
    steps: int = 0
    epochs: float = 0.0
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def extended(
        self, *, trial: int, stage: str, steps: int, epochs: float, lr: float, rung: int
    ) -> Lineage:
        """Return the lineage after one more training segment of ``steps`` steps."""
        record = {
            "trial": trial,
            "stage": stage,
            "steps": [self.steps, self.steps + steps],
            "epochs": round(epochs, 6),
            "lr": lr,
        }
        return replace(
            self,
            trial=trial,
            rung=rung,
            steps=self.steps + steps,
            epochs=round(self.epochs + epochs, 6),
            history=(*self.history, record),
        )

    def to_json(self) -> str:
        """Return the lineage as the JSON a checkpoint's metadata carries."""
        return json.dumps(
            {
                "trial": self.trial,
                "rung": self.rung,
                "steps": self.steps,
                "epochs": self.epochs,
                "history": list(self.history),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        """Parse :meth:`to_json`'s output.

        Raises:
            ValueError: malformed.
        """
        data = json.loads(text)
        return cls(
            trial=int(data["trial"]),
            rung=int(data["rung"]),
            steps=int(data["steps"]),
            epochs=float(data["epochs"]),
            history=tuple(dict(h) for h in data["history"]),
        )


class CheckpointStore(Protocol):
    """Where candidates' checkpoints are kept, by trial number.

    ``save`` replaces what a trial saved before; ``load`` returns None when nothing is
    stored for the trial. Implementations must make a saved checkpoint whole or absent
    (never half written) for a later ``load``, possibly in another process.
    """

    def save(self, trial: int, data: bytes) -> None:
        """Keep ``data`` as ``trial``'s checkpoint."""
        ...

    def load(self, trial: int) -> bytes | None:
        """Return ``trial``'s checkpoint, or None."""
        ...


class MemoryCheckpoints:
    """Checkpoints in a dict: for one process that finishes what it starts."""

    def __init__(self) -> None:
        self._data: dict[int, bytes] = {}

    def save(self, trial: int, data: bytes) -> None:
        """Keep ``data`` as ``trial``'s checkpoint."""
        self._data[trial] = data

    def load(self, trial: int) -> bytes | None:
        """Return ``trial``'s checkpoint, or None."""
        return self._data.get(trial)


class FolderCheckpoints:
    """Checkpoints as ``trial-N.safetensors`` files in a folder (written atomically), so
    that a search stopped with Ctrl-C resumes with its candidates' weights."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def _path(self, trial: int) -> Path:
        return self.folder / f"trial-{trial}.safetensors"

    def save(self, trial: int, data: bytes) -> None:
        """Keep ``data`` as ``trial``'s checkpoint."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(trial)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def load(self, trial: int) -> bytes | None:
        """Return ``trial``'s checkpoint, or None."""
        path = self._path(trial)
        return path.read_bytes() if path.is_file() else None


def checkpoint_info(
    problem: PruningProblem, plan: dict[str, int], **extra: object
) -> CheckpointInfo:
    """Return the metadata a dense pruned checkpoint of this job carries (a hybrid
    sequence's removed kernels are added with ``dataclasses.replace(info,
    kernel_masks=...)``: see :func:`candidate_info`)."""
    norm = problem.data.normalization
    return CheckpointInfo(
        arch=problem.info.arch,
        num_classes=problem.info.num_classes,
        input_shape=problem.input_shape,
        plan=complete_plan(plan, problem.graph),
        round_to=problem.spec.pruning.round_to,
        normalization={"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
        extra={k: str(v) for k, v in extra.items()},
    )


def candidate_info(
    problem: PruningProblem, model: nn.Module, plan: Plan, **extra: object
) -> CheckpointInfo:
    """Return the metadata of a search candidate's checkpoint.

    ``plan`` is the candidate's searched plan. After a hybrid sequence's kernel steps the
    checkpoint records the model's own widths (kernel steps may cut columns no filter
    reads) and its removed kernels, so that ``models.io.load_pruned`` rebuilds it, and
    the searched plan beside them, for :func:`restore_candidate`.
    """
    masks = kernels_removed(model, problem.spec.pruning.sequence)
    if masks is None:
        return checkpoint_info(problem, plan.to_dict(), **extra)
    widths = widths_of(model, problem.graph).to_dict()
    info = checkpoint_info(problem, widths, **{_SEARCHED_PLAN_KEY: plan.to_json()}, **extra)
    return replace(info, kernel_masks=masks)


def save_candidate(
    problem: PruningProblem, model: nn.Module, plan: Plan, lineage: Lineage, **extra: object
) -> bytes:
    """Return a pruned candidate as checkpoint bytes carrying its plan and lineage (a
    valid pruned checkpoint: ``models.io.load_pruned`` reads it too)."""
    lineage_json = {_LINEAGE_KEY: lineage.to_json()}
    info = candidate_info(problem, model, plan, trial=lineage.trial, **lineage_json, **extra)
    return checkpoint_bytes(model, info)


def restore_candidate(problem: PruningProblem, data: bytes) -> tuple[nn.Module, Plan, Lineage]:
    """Rebuild a candidate saved by :func:`save_candidate` for ``problem``.

    The structure comes from pruning the problem's model with the searched plan (the
    cached dependency graph makes that cheap; a hybrid sequence's kernel steps follow as
    they did), the weights from the checkpoint.

    Returns:
        ``(model, searched plan, lineage)``.

    Raises:
        WeightsError: not a checkpoint of this problem's model.
        ValueError: its lineage metadata is malformed.
    """
    info = read_checkpoint_info(data)
    searched = info.extra.get(_SEARCHED_PLAN_KEY)
    plan = Plan.from_json(searched) if searched else Plan(dict(info.plan.items()))
    model = build_candidate(problem, plan)
    model.load_state_dict(read_checkpoint_state(data), strict=True)
    lineage = Lineage.from_json(info.extra[_LINEAGE_KEY])
    return model.eval(), plan, lineage
