"""Everything fixed about one job, loaded once per worker: model, data, costs, budget."""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.cost import (
    AnalyticCost,
    Cost,
    Latency,
    check_plans,
    measure_cost,
)
from models.data import DataSplits, load_dataset
from models.device import describe_device, resolve_device
from models.errors import ModelsError, WeightsError
from models.io import (
    CheckpointInfo,
    OnnxTemplate,
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
    apply_plan,
    block_contributions,
    build_pruning_graph,
    score_channels,
)
from models.train import SoftTargets, evaluate, steps_per_epoch
from models.zoo import get_architecture
from search.budget import ResolvedBudget, resolve_budget
from search.errors import SpecError
from search.fidelity import FidelityPlan, plan_fidelity
from search.hybrid import has_sparse_steps, prune_hybrid
from search.latency import LatencyMeter, LocalMeter, MeterFactory
from search.latency_table import budget_predictor, build_latency_table
from search.space import SearchSpace
from search.spec import JobSpec, LatencySettings
from search.steps import to_pruning_steps

if TYPE_CHECKING:
    from models.cost import LatencyTable

__all__ = [
    "Baseline",
    "PruningProblem",
    "build_candidate",
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


@dataclass(frozen=True)
class Baseline:
    """The unpruned model's measurements, the reference for budgets and reports."""

    cost: Cost
    val_accuracy: float
    latency: Latency | None

    def to_dict(self) -> dict[str, Any]:
        """Return the measurements as report JSON."""
        return {
            "macs": self.cost.macs,
            "params": self.cost.params,
            "size_bytes": self.cost.size_bytes,
            "val_accuracy": self.val_accuracy,
            "latency_ms": self.latency.median_ms if self.latency else None,
            "latency_p90_ms": self.latency.p90_ms if self.latency else None,
            "latency_device": self.latency.device if self.latency else None,
        }


@dataclass(frozen=True)
class PruningProblem:
    """One job's fixed inputs, shared by all its trials in a process.

    Attributes:
        spec: the job spec.
        model: the unpruned model (never modified; trials prune copies).
        info: architecture, classes, input shape and normalization of the model.
        graph: its prunable groups.
        cost: the analytic cost model of plans.
        data: the data splits (val chooses, test is kept for the final report).
        scores: channel importance per group under the spec's criterion, computed once.
        baseline: the unpruned model's cost, accuracy and (when needed) latency.
        budget: the spec's budget in absolute units.
        space: the search space with budget projection.
        calibration: the batches data-driven criteria looked at.
        pretrained: whether weights were given (else the model is random).
        latency_meter: measures candidates' latency where ``spec.latency.target`` says
            (see :mod:`search.latency`).
        latency_table: with ``latency.predictor: table``, the device's calibrated layer
            latency table: trials and the space's projection use its predictions.
        device: where candidates are recalibrated, trained and evaluated (the worker's,
            not the job's: see :mod:`models.device`). Surgery and cost counting stay on
            the CPU, where ``model`` lives.
    """

    spec: JobSpec
    model: nn.Module
    info: CheckpointInfo
    graph: PruningGraph
    cost: AnalyticCost
    data: DataSplits
    scores: dict[str, torch.Tensor]
    baseline: Baseline
    budget: ResolvedBudget
    space: SearchSpace
    calibration: list[tuple[torch.Tensor, torch.Tensor]]
    pretrained: bool
    latency_meter: LatencyMeter
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    latency_table: LatencyTable | None = None

    @cached_property
    def teacher(self) -> nn.Module:
        """The unpruned model on :attr:`device`, for distillation and evaluation (``model``
        itself on the CPU; never trained)."""
        if self.device.type == "cpu":
            return self.model
        return copy.deepcopy(self.model).to(self.device).eval()

    @cached_property
    def soft_targets(self) -> SoftTargets | nn.Module:
        """What distillation learns from: the :attr:`teacher`'s logits on the training
        split, computed on the first call (one forward pass; every candidate and the
        delivered model reuse them), or the teacher itself where the split cannot hold
        them (:meth:`models.train.SoftTargets.of`)."""
        targets = SoftTargets.of(self.teacher, self.data.train)
        return targets if targets is not None else self.teacher

    @cached_property
    def cost_is_exact(self) -> bool:
        """Whether :attr:`cost` predicts a candidate's cost exactly as fvcore counts it,
        so that trials take the prediction instead of tracing every candidate (the
        delivered model and the report are always counted by fvcore).

        Checked on the first call, once per process: a few plans
        (:func:`models.cost.check_plans`) are pruned for real and counted. False with
        kernel or weight steps in ``pruning.sequence`` (their cost counts non-zeros).
        """
        if has_sparse_steps(self.spec.pruning.sequence):
            return False
        plans = check_plans(self.graph, self.spec.search.seed)
        try:
            exact = all(
                self.cost.matches(plan, build_candidate(self, Plan(plan))) for plan in plans
            )
        except ModelsError as exc:  # a plan that cannot be built or counted: count each
            logger.info("trials count their cost with fvcore: %s", exc)
            return False
        if exact:
            logger.info(
                "trials take their cost from the analytic model: it matched fvcore exactly "
                "on %d pruned plans",
                len(plans),
            )
        else:
            logger.info("trials count their cost with fvcore: the analytic model missed one")
        return exact

    def place(self, model: nn.Module) -> nn.Module:
        """Move a candidate to :attr:`device` for recalibration, training and evaluation
        (in place; returned for chaining)."""
        return model.to(self.device)

    @property
    def fidelity(self) -> FidelityPlan | None:
        """How the job's ``compute_epochs`` is spent in rungs (None without it), each
        rung a whole number of steps on this problem's training split."""
        plan = plan_fidelity(self.spec)
        if plan is None:
            return None
        return plan.snapped(steps_per_epoch(len(self.data.train), self.spec.finetune.batch_size))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one input, or (T, F) for a sequence model."""
        return self.info.input_shape

    @cached_property
    def onnx_template(self) -> OnnxTemplate | None:
        """The unpruned model's ONNX graph, which candidates' latency measurements fill
        with their own tensors instead of exporting each candidate afresh (see
        :class:`models.io.OnnxTemplate`; it checks every graph it makes). Made on the
        first call; None where the job does not time candidates (only the delivered
        model's latency is measured then: one export is cheaper than a template), where
        latency is not timed with onnxruntime, or where the model's export has no
        reusable graph."""
        if not self.spec.measures_latency or self.spec.latency.backend != "onnxruntime":
            return None
        started = time.perf_counter()
        template = OnnxTemplate.of(self.model, self.input_shape)
        logger.debug(
            "ONNX template for candidates' latency: %s in %.2f s",
            "made" if template else "none",
            time.perf_counter() - started,
        )
        return template

    def measure_latency(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        """Return the latency of ``model`` measured end to end by :attr:`latency_meter`
        (``onnx_bytes``: its ONNX export, if made already; else the
        :attr:`onnx_template` filled with its tensors where that fits, else an export)."""
        if onnx_bytes is None and model is not self.model and self.onnx_template is not None:
            onnx_bytes = self.onnx_template.bytes_for(model)
        return self.latency_meter.measure(model, onnx_bytes)


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


def build_candidate(problem: PruningProblem, plan: Plan) -> nn.Module:
    """Return the pruned (not yet recalibrated) model of ``plan``: a new model, pruned
    from the problem's unpruned one with its channel scores, then by the kernel and
    weight steps of ``pruning.sequence`` if it has any, at once (removed kernels and
    recurrent weights are zeros of the weights; a column no filter reads any more is
    cut, so the model may be narrower than ``plan``). The same plan always gives the
    same model, as rung checkpoints need."""
    sequence = problem.spec.pruning.sequence
    if not has_sparse_steps(sequence):
        return apply_plan(
            problem.model,
            plan,
            problem.spec.pruning.criterion,
            input_shape=problem.input_shape,
            graph=problem.graph,
            scores=problem.scores,
        )
    hybrid = prune_hybrid(
        problem.model,
        plan,
        to_pruning_steps(sequence or ()),
        problem.spec.pruning.criterion,
        problem.calibration,
        graph=problem.graph,
        scores=problem.scores,
    )
    return hybrid.model
