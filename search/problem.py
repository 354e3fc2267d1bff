"""Everything fixed about one job, loaded once per worker: model, data, costs, budget.

How a problem is built (from a zoo name, an ONNX upload or a module in memory) is
:mod:`search.loading`."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.cost import AnalyticCost, Cost, Latency, check_plans
from models.data import DataSplits
from models.errors import ExportError, ModelsError
from models.io import CheckpointInfo, OnnxTemplate
from models.prune import Plan, PruningGraph, apply_plan
from models.train import SoftTargets, steps_per_epoch
from search.budget import ResolvedBudget
from search.fidelity import FidelityPlan, plan_fidelity
from search.hybrid import has_sparse_steps, prune_hybrid
from search.latency import LatencyMeter, OutputCheckingMeter
from search.space import SearchSpace
from search.spec import JobSpec
from search.steps import to_pruning_steps

if TYPE_CHECKING:
    from models.cost import LatencyTable

__all__ = ["Baseline", "PruningProblem", "build_candidate"]

logger = logging.getLogger(__name__)


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
        :class:`models.io.OnnxTemplate`; every graph is checked against torch, by the
        template or by the meter that times it). Made on the
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
        :attr:`onnx_template` filled with its tensors where that fits, else an export).

        A meter on this machine's CPU (:class:`~search.latency.OutputCheckingMeter`)
        checks the template's graph in the session that times it; a graph it refuses
        retires the template, and the candidate is exported and timed as any other."""
        template = self.onnx_template if onnx_bytes is None and model is not self.model else None
        meter = self.latency_meter
        if template is not None and isinstance(meter, OutputCheckingMeter) and meter.checks_outputs:
            graph = template.bytes_for(model, checked=False)
            if graph is not None:
                try:
                    return meter.measure_checked(model, graph, template.output_check(model))
                except ExportError as exc:
                    template.discard(str(exc))
        elif template is not None:
            onnx_bytes = template.bytes_for(model)
        return meter.measure(model, onnx_bytes)


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
