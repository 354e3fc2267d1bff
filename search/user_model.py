"""Searching a user's own ``nn.Module`` from Python: :func:`prune_module`.

The same engine as ``inferprune prune`` and the service (one lifecycle: the study, the
rungs, the final fine-tune, the report), fed with a module and data the caller already
has, as ModelOpt's ``mtp.prune`` and Torch-Pruning's pruners are. Nothing is pickled
or written unless ``storage`` names a database.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from models.data import DataSplits, InputSplit, collect_batches
from models.data._batches_in_memory import DEFAULT_MAX_BYTES
from models.device import resolve_device
from models.io import CheckpointInfo
from models.prune import Plan, has_recurrent_weights
from search.checkpoints import MemoryCheckpoints
from search.errors import NoFeasibleTrialError, SpecError
from search.lifecycle import conclude_search
from search.loading import problem_from_model
from search.runner import run_search
from search.spec import JobSpec
from search.study import open_study
from search.warm_start import job_sensitivity

__all__ = ["PrunedModule", "prune_module"]

DATASET_NAME = "python"
"""The ``dataset`` a job spec records for data handed over from Python."""


@dataclass(frozen=True)
class PrunedModule:
    """What :func:`prune_module` delivers.

    Attributes:
        model: the pruned module, fine-tuned, on the CPU in eval mode. It is a plain
            ``nn.Module`` of the caller's own classes with narrower layers: save it with
            ``torch.save(model.state_dict(), ...)`` or ship ``onnx``.
        plan: channels kept per group.
        report: report.json's content (baseline, best, Pareto front, every trial, the
            compute spent), as the CLI and the service write it.
        front: the Pareto front (``report["pareto"]``): one dict per non-dominated trial.
        onnx: the pruned model exported to ONNX, runnable without inferprune.
    """

    model: nn.Module
    plan: Plan
    report: dict[str, Any]
    front: list[dict[str, Any]]
    onnx: bytes


def prune_module(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    train: Iterable[Any],
    val: Iterable[Any],
    test: Iterable[Any] | None = None,
    budget: Mapping[str, Any] | None = None,
    compute_epochs: float | None = None,
    trials: int | None = None,
    objective: str = "constrained",
    storage: str | optuna.storages.BaseStorage | None = None,
    settings: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    max_data_bytes: int = DEFAULT_MAX_BYTES,
) -> PrunedModule:
    """Search per-layer widths of ``model`` for ``budget`` and return the pruned model.

    The caller's module is not changed: a copy is pruned. The data are read once into
    memory (the engine reshuffles them by its own seed; see
    :mod:`models.data._batches_in_memory`): ``train`` trains the candidates, ``val``
    chooses between them, ``test`` is looked at only once, for the delivered model's
    report. Without ``test``, a random half of ``val`` is held out as the test split.

    Args:
        model: a trained classifier taking ``example_input``-shaped batches and giving
            (batch, classes) logits; convolutions, batch norms, residual additions,
            concatenations and depthwise convolutions are pruned together as Torch-
            Pruning's dependency graph couples them.
        example_input: one input: (C, H, W) or (1, C, H, W) for an image model; (T, F)
            or (1, T, F) for a model with LSTM/GRU layers (batch-first), whose hidden
            units are the groups.
        train, val, test: torch ``DataLoader`` s, or any iterables of ``(inputs, labels)``
            batches with inputs as the model takes them.
        budget: the job spec's budget, e.g. ``{"flops": 0.25}`` or ``{"params": 0.5,
            "max_accuracy_drop": 0.01}``.
        compute_epochs: the whole job's training, in epochs of ``train`` (see
            ``search.compute_epochs``). Give this or ``trials``.
        trials: candidates to evaluate, each fine-tuned ``finetune.epochs_per_trial``.
        objective: ``constrained``, ``pareto`` or ``scalar``.
        storage: an Optuna storage or database URL to keep the study in (a rerun with the
            same settings resumes it); in memory by default.
        settings: any other job spec fields, as in the JSON spec (``{"finetune": {"lr":
            0.05, "distill": True}, "pruning": {"criterion": "taylor"}}``).
        device: where to train (``auto``, ``cpu``, ``cuda:N``, ``mps``; None reads
            ``INFERPRUNE_DEVICE``).
        max_data_bytes: most bytes each split may take in memory.

    Raises:
        SpecError: neither or both of ``compute_epochs`` and ``trials``; an input that
            is not one image (one sequence for a recurrent model); a model that does not
            give (batch, classes) logits.
        pydantic.ValidationError: a spec field out of range.
        DataError: batches that are not ``(inputs, labels)`` of the example's shape.
        NoFeasibleTrialError: no candidate met the budget.
    """
    if (compute_epochs is None) == (trials is None):
        raise SpecError(
            "say how much to search: compute_epochs=E (the whole job's training, in "
            "epochs) or trials=N, one of them"
        )
    shape = _input_shape(example_input, model)
    pruned_from = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        logits = pruned_from(example_input.detach().cpu().float().reshape(1, *shape))
    if logits.dim() != 2:
        raise SpecError(
            f"the model gave outputs of shape {tuple(logits.shape)} for one input; "
            "prune_module needs a classifier giving (batch, classes) logits"
        )
    classes = int(logits.shape[1])
    seed = int((settings or {}).get("search", {}).get("seed", 0))
    data = _splits(train, val, test, shape, classes, seed=seed, max_bytes=max_data_bytes)
    spec = _spec(shape, classes, budget, compute_epochs, trials, objective, settings)
    info = CheckpointInfo(type(model).__name__, classes, shape, Plan())
    target = device if isinstance(device, torch.device) else resolve_device(device)
    problem = problem_from_model(spec, pruned_from, info, data, pretrained=True, device=target)
    study = open_study(
        problem,
        storage if storage is not None else optuna.storages.InMemoryStorage(),
        sensitivity=lambda: job_sensitivity(problem),
    )
    checkpoints = MemoryCheckpoints()
    fidelity = problem.fidelity
    run_search(
        problem,
        study,
        trials=fidelity.trials if fidelity is not None else spec.search.trials,
        checkpoints=checkpoints,
    )
    conclusion = conclude_search(
        problem,
        study.get_trials(deepcopy=False),
        storage="memory" if storage is None else str(storage),
        study_name=study.study_name,
        checkpoints=checkpoints,
    )
    if conclusion.final is None:
        raise NoFeasibleTrialError(conclusion.message or f"the search ended {conclusion.status}")
    return PrunedModule(
        model=conclusion.final.model,
        plan=conclusion.final.plan,
        report=conclusion.report,
        front=list(conclusion.report["pareto"]),
        onnx=conclusion.artifacts["model.onnx"],
    )


def _input_shape(example: torch.Tensor, model: nn.Module) -> tuple[int, ...]:
    """Return one input's shape: (C, H, W) for an image model, (T, F) for a model with
    recurrent layers (a leading batch of 1 dropped either way)."""
    sequences = has_recurrent_weights(model)
    rank = 2 if sequences else 3
    shape = tuple(int(v) for v in example.shape)
    if len(shape) == rank + 1 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != rank:
        wanted = (
            "one sequence, (T, F) or (1, T, F)"
            if sequences
            else "one image, (C, H, W) or (1, C, H, W)"
        )
        raise SpecError(f"example_input has shape {tuple(example.shape)}; give {wanted}")
    return shape


def _splits(
    train: Iterable[Any],
    val: Iterable[Any],
    test: Iterable[Any] | None,
    shape: tuple[int, ...],
    classes: int,
    *,
    seed: int,
    max_bytes: int,
) -> DataSplits:
    """Return the caller's batches as the engine's splits (test carved from val if need be)."""
    splits: dict[str, InputSplit] = {
        "train": collect_batches(train, name="train", max_bytes=max_bytes),
        "val": collect_batches(val, name="val", max_bytes=max_bytes),
    }
    if test is not None:
        splits["test"] = collect_batches(test, name="test", max_bytes=max_bytes)
    for name, split in splits.items():
        if tuple(split.inputs.shape[1:]) != shape:
            raise SpecError(
                f"{name} has inputs of shape {tuple(split.inputs.shape[1:])}; the "
                f"example_input is {shape}"
            )
        low, top = int(split.labels.min()), int(split.labels.max())
        if low < 0 or top >= classes:
            raise SpecError(
                f"{name} has label {low if low < 0 else top}, but the model gives {classes} "
                f"classes (0 to {classes - 1})"
            )
    if test is None:
        if len(splits["val"]) < 2:
            raise SpecError("val has fewer than two samples: give test=, or more val data")
        splits["val"], splits["test"] = splits["val"].split(0.5, seed=seed)
    return DataSplits(
        name=DATASET_NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=classes,
        input_shape=shape,
    )


def _spec(
    shape: tuple[int, ...],
    classes: int,
    budget: Mapping[str, Any] | None,
    compute_epochs: float | None,
    trials: int | None,
    objective: str,
    settings: Mapping[str, Any] | None,
) -> JobSpec:
    data: dict[str, Any] = copy.deepcopy(dict(settings or {}))
    for own in ("arch", "dataset", "input_shape", "num_classes", "budget", "objective"):
        if own in data:
            raise SpecError(f"settings may not hold {own!r}: prune_module sets it")
    search = dict(data.get("search", {}))
    search.pop("trials", None)
    if compute_epochs is not None:
        search["compute_epochs"] = compute_epochs
    else:
        search["trials"] = trials
    data |= {
        "dataset": DATASET_NAME,
        "input_shape": list(shape),
        "num_classes": classes,
        "budget": dict(budget or {}),
        "objective": objective,
        "search": search,
    }
    return JobSpec.model_validate(data)
