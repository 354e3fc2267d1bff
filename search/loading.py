"""Building a job's :class:`~search.problem.PruningProblem`: from a zoo architecture
and its weights (:func:`load_problem`), an ONNX upload (:func:`load_onnx_problem`) or a
module already in memory (:func:`problem_from_model`, which the other two end in)."""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.cost import AnalyticCost, measure_cost
from models.data import DataSplits, load_dataset
from models.device import describe_device, resolve_device
from models.errors import WeightsError
from models.io import (
    CheckpointInfo,
    check_against_onnxruntime,
    import_onnx,
    load_model,
    read_checkpoint_info,
    unfold_batchnorm,
)
from models.prune import (
    CALIBRATION_BATCHES,
    Plan,
    PruningGraph,
    block_contributions,
    build_pruning_graph,
    score_channels,
)
from models.train import evaluate
from models.zoo import get_architecture
from search.budget import resolve_budget
from search.errors import SpecError
from search.latency import LatencyMeter, LocalMeter, MeterFactory
from search.latency_table import budget_predictor, build_latency_table
from search.problem import Baseline, PruningProblem
from search.space import SearchSpace
from search.spec import JobSpec, LatencySettings

if TYPE_CHECKING:
    from models.cost import LatencyTable

__all__ = [
    "ONNX_ARCH",
    "load_onnx_problem",
    "load_problem",
    "problem_from_model",
    "spec_for_model",
]

logger = logging.getLogger(__name__)

CALIBRATION_BATCH_SIZE = 32

ONNX_ARCH = "onnx"
"""The ``arch`` a checkpoint of an imported ONNX model records (it is no zoo name: the
delivered ONNX file, not the checkpoint, is what rebuilds it)."""


def _stored_info(weights: str | os.PathLike[str] | bytes | None) -> CheckpointInfo | None:
    if weights is None:
        return None
    try:
        return read_checkpoint_info(weights)
    except WeightsError:
        return None  # plain weights: the spec must describe them


def load_problem(
    spec: JobSpec,
    *,
    weights: str | os.PathLike[str] | bytes | None = None,
    dataset: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    meter_factory: MeterFactory | None = None,
) -> PruningProblem:
    """Load the model and data of ``spec`` and measure the baseline.

    Args:
        spec: the job.
        weights: the trained model (path or bytes), or None for random initialization
            (seeded by ``search.seed``: every worker of a job builds the same model).
        dataset: overrides ``spec.dataset`` (the service passes an uploaded file here).
        data_root: where public data sets live.
        device: where to train and evaluate (``auto``, ``cpu``, ``cuda:N``, ``mps``; None
            reads ``INFERPRUNE_DEVICE``, default ``auto``).
        meter_factory: makes the latency meter (see :func:`problem_from_model`).

    Returns:
        The :class:`PruningProblem`.

    Raises:
        ModelsError: model, weights or data cannot be loaded, or the device is not there.
        SpecError: the model and data disagree (classes, shapes).
        BudgetUnreachableError: no plan can meet the budget.
    """
    started = time.perf_counter()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    if spec.arch is None:
        raise SpecError(
            "arch: name a zoo architecture (a model of your own goes through "
            "search.prune_module, or an ONNX upload)",
            fields=("arch",),
        )
    stored = _stored_info(weights)
    if stored is not None and len(stored.plan):
        raise SpecError("these weights are already pruned; submit the unpruned model")
    shape = spec.input_shape or (stored.input_shape if stored else None)
    shape = shape or get_architecture(spec.arch).default_input_shape
    classes = spec.num_classes or (stored.num_classes if stored else None)
    data = _job_data(spec, dataset, data_root, shape, classes)
    with torch.random.fork_rng(devices=[]):  # without weights: the same model on every worker
        torch.manual_seed(spec.search.seed)
        model, info = load_model(
            spec.arch, weights, num_classes=classes or data.num_classes, input_shape=shape
        )
    logger.info("loaded %s and %s in %.1f s", spec.arch, data.name, time.perf_counter() - started)
    pretrained = weights is not None
    return problem_from_model(
        spec, model, info, data, pretrained=pretrained, device=target, meter_factory=meter_factory
    )


def spec_for_model(spec: JobSpec, input_shape: tuple[int, ...], classes: int) -> JobSpec:
    """Return ``spec`` with a given model's input shape and classes, which the spec may
    leave out or must give as the model has them.

    Raises:
        SpecError: the spec's ``input_shape`` or ``num_classes`` disagree with the model.
    """
    if spec.input_shape is not None and tuple(spec.input_shape) != input_shape:
        raise SpecError(
            f"input_shape: the model takes {list(input_shape)}, not {list(spec.input_shape)}",
            fields=("input_shape",),
        )
    if spec.num_classes is not None and spec.num_classes != classes:
        raise SpecError(
            f"num_classes: the model gives {classes}, not {spec.num_classes}",
            fields=("num_classes",),
        )
    data = spec.to_json_dict() | {"input_shape": list(input_shape), "num_classes": classes}
    return JobSpec.model_validate(data)


def load_onnx_problem(
    spec: JobSpec,
    onnx: bytes,
    *,
    dataset: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    meter_factory: MeterFactory | None = None,
) -> PruningProblem:
    """Load an ONNX model (rebuilt as a torch module, never executed as code: see
    :func:`models.io.import_onnx`) and the spec's data, and measure the baseline.

    The model's input shape and classes are its own; the spec may leave them out. Its
    convolutions get back the BatchNorms an export folds into them, as identities at the
    training data's statistics (:func:`models.io.unfold_batchnorm`), so that pruned
    candidates can be recalibrated.

    Raises:
        WeightsError: the file is not an ONNX model the importer can rebuild faithfully.
        SpecError: the spec's input shape or classes disagree with the model.
        ModelsError, BudgetUnreachableError: as :func:`load_problem`.
    """
    started = time.perf_counter()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    imported = import_onnx(onnx)
    check_against_onnxruntime(onnx, imported)
    shape, classes = imported.input_shape, imported.num_classes
    spec = spec_for_model(spec, shape, classes)
    data = _job_data(spec, dataset, data_root, shape, classes)
    calibration = data.train.batches(
        CALIBRATION_BATCH_SIZE, shuffle=True, seed=spec.search.seed, limit=CALIBRATION_BATCHES
    )
    unfolded = unfold_batchnorm(imported.model, calibration)
    ops = {"onnx_ops": ",".join(imported.ops), "unfolded_batchnorms": str(unfolded)}
    info = CheckpointInfo(ONNX_ARCH, classes, shape, Plan(), extra=ops)
    logger.info(
        "imported the ONNX model %s (%s; %d BatchNorms unfolded) and loaded %s in %.1f s",
        imported.graph_name,
        ", ".join(imported.ops),
        unfolded,
        data.name,
        time.perf_counter() - started,
    )
    return problem_from_model(
        spec,
        imported.model,
        info,
        data,
        pretrained=True,
        device=target,
        meter_factory=meter_factory,
    )


def _job_data(
    spec: JobSpec,
    dataset: str | None,
    data_root: str | os.PathLike[str] | None,
    shape: tuple[int, ...],
    classes: int | None,
) -> DataSplits:
    """Return the job's data (``dataset`` overriding the spec's), split by its seed."""
    return load_dataset(
        dataset or spec.dataset,
        input_shape=shape,
        num_classes=classes,
        root=data_root,
        seed=spec.search.seed,
    )


def problem_from_model(
    spec: JobSpec,
    model: nn.Module,
    info: CheckpointInfo,
    data: DataSplits,
    *,
    pretrained: bool,
    device: torch.device,
    meter_factory: MeterFactory | None = None,
) -> PruningProblem:
    """Return the problem of pruning ``model`` (on the CPU, in eval mode, never changed)
    on ``data`` under ``spec``: its groups, channel scores, baseline and search space.
    ``spec.arch`` is not read: the model is given (the zoo, an ONNX import, or a user's
    own module). ``meter_factory`` makes the latency meter (default:
    :class:`LocalMeter`); a job whose ``latency.target`` names a device needs one that
    reaches it (the service's).

    Raises:
        SpecError: ``latency.target`` names a device and no meter that reaches it is given.
        BudgetUnreachableError: no plan can meet the budget.
        ModelsError: the model cannot be traced into groups or measured.
    """
    graph = build_pruning_graph(
        model,
        info.input_shape,
        round_to=spec.pruning.round_to,
        ignored_layers=spec.pruning.ignored_layers,
    )
    cost = AnalyticCost(model, graph)
    calibration = list(
        data.train.batches(
            CALIBRATION_BATCH_SIZE, shuffle=True, seed=spec.search.seed, limit=CALIBRATION_BATCHES
        )
    )
    scores = score_channels(
        model,
        spec.pruning.criterion,
        calibration,
        input_shape=info.input_shape,
        graph=graph,
        seed=spec.search.seed,
    )
    on_device = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    val_accuracy = evaluate(on_device, data.val).top1
    meter = (meter_factory or _local_meter)(spec.latency, info.input_shape, device)
    latency = meter.measure(model) if spec.measures_latency else None
    baseline = Baseline(measure_cost(model, info.input_shape), val_accuracy, latency)
    budget = resolve_budget(spec.budget, baseline.cost, val_accuracy)
    table = None
    if spec.latency.predictor == "table" and spec.measures_latency:
        table = build_latency_table(model, graph, meter, spec.latency, seed=spec.search.seed)
    depth = spec.searches_depth and _table_knows_depth(spec, graph, table)
    space = SearchSpace(
        graph,
        cost,
        budget,
        latency=budget_predictor(table) if table else None,
        depth=depth,
        contributions=(
            block_contributions(model, graph.blocks, calibration[0][0])
            if depth and graph.blocks and pretrained and calibration
            else None
        ),
    )
    space.check_reachable()
    problem = PruningProblem(
        spec=spec,
        model=model,
        info=info,
        graph=graph,
        cost=cost,
        data=data,
        scores=scores,
        baseline=baseline,
        budget=budget,
        space=space,
        calibration=calibration,
        pretrained=pretrained,
        latency_meter=meter,
        device=device,
        latency_table=table,
    )
    if on_device is not model:
        problem.__dict__["teacher"] = on_device  # the copy made above: keep, not copy again
    logger.info(
        "%s on %s: %d groups, %d MACs, val accuracy %.4f; training on %s",
        info.arch,
        data.name,
        len(graph.groups),
        baseline.cost.macs,
        val_accuracy,
        describe_device(device),
    )
    return problem


def _local_meter(
    settings: LatencySettings, input_shape: tuple[int, ...], device: torch.device
) -> LatencyMeter:
    if settings.target is not None:
        raise SpecError(
            f"latency.target: device {settings.target!r} is reached through a server's "
            "device agents: submit the job to the server (`inferprune submit "
            "--latency-target NAME`), or run `inferprune prune` with --latency-target and "
            "the server's --data-dir or --db",
            fields=("latency.target",),
        )
    return LocalMeter(settings, input_shape, device)


def _table_knows_depth(spec: JobSpec, graph: PruningGraph, table: LatencyTable | None) -> bool:
    """Return whether the latency table (if any) predicts plans that remove blocks; with
    ``pruning.depth`` null a table that cannot turns depth off, with true it is refused.

    Raises:
        SpecError: ``pruning.depth`` is true and the table cannot.
    """
    if table is None or not graph.blocks or table.knows_depth:
        return True
    if spec.pruning.depth:
        raise SpecError(
            "pruning.depth: this model's ONNX export does not say which module each op "
            "ran in, so the layer latency table cannot predict plans that remove blocks; "
            "set pruning.depth to false, or latency.predictor to measure",
            fields=("pruning.depth",),
        )
    logger.info("depth off: the latency table cannot predict plans that remove blocks")
    return False
