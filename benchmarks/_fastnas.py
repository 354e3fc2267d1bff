"""NVIDIA ModelOpt's FastNAS as a one-shot way to choose per-group widths.

FastNAS (``modelopt.torch.prune``, mode ``"fastnas"``) turns a copy of the model into a
search space whose hyperparameters are the output widths of the layers that produce
independent channel sets; residual adds are traced, so channels joined by an add form
one hyperparameter, named after the first layer producing them (``conv1``,
``layer2.0.conv2``, ...: the same roots and members as our groups). FastNAS then:

1. sorts every layer's channels by importance, so that a width ``w`` keeps the ``w``
   most important channels;
2. builds a *sensitivity map*: for each hyperparameter and each allowed width, the drop
   of ``score_func`` (here: validation top-1) when only that hyperparameter is narrowed,
   BatchNorm statistics recalibrated on a few training batches before every score;
3. bisects one threshold on that drop: every hyperparameter takes its narrowest width
   whose drop is below the threshold, and the largest threshold whose subnet meets the
   FLOPs limit (counted by torchprofile, BatchNorm excluded) wins;
4. exports the chosen subnet as a plain, physically narrower model.

:func:`fastnas_plan` reads the kept width of every group of ours off that exported model
(``out_channels`` of the group's root layer, as ``_global_magnitude_widths`` in
``search_quality.py`` does for Torch-Pruning), rounds it to the group's allowed widths,
and projects it onto our MACs budget (fvcore multiply-adds at batch 1) with
``problem.space.project``, which only ever narrows: FastNAS's FLOPs and our MACs count
slightly different operations, so a FastNAS subnet at the limit can be a little over
ours; one below the limit is kept as it is (FastNAS chose it).

Caveats:

* FastNAS's widths are multiples of ``channel_divisor``; it is set to
  ``spec.pruning.round_to`` so they coincide with our allowed widths (multiples of
  ``round_to``, at least ``round_to``) for ordinary layers. Its default grid of kept
  ratios (0.05, 0.10, ..., 1.00 of each layer) is kept: for layers wider than 20 steps
  not every width we allow is a FastNAS choice.
* Only the widths transfer. Which channels survive is decided again by our criterion when
  ``search.final.finalize`` rebuilds the plan; FastNAS's own channel order is discarded.
* FastNAS recalibrates BatchNorm from a queue of cached input batches and skips the
  recalibration (with a warning) unless that queue is full; the queue normally holds 50
  batches. It is resized to ``score_batches`` on the converted copy so every score is
  taken after recalibration on exactly the batches given here. This touches
  ``PatchManager.patch_data``, an internal of ``modelopt.torch.nas`` (checked on
  nvidia-modelopt 0.47).
* A group FastNAS offers no width choices for (its tracer could not follow it) stays
  whole; it is logged and left to the projection.
* No search checkpoint is written (``checkpoint=None``) and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.prune import Plan, validate_plan
from models.train import evaluate

if TYPE_CHECKING:
    from models.data import BatchSource
    from models.prune import ChannelGroup
    from search import PruningProblem

__all__ = ["fastnas_plan"]

logger = logging.getLogger(__name__)

BATCH_SIZE = 64
"""Samples per BatchNorm-recalibration batch."""


@dataclass(frozen=True)
class _TrainBatches:
    """The same few shuffled training batches on every pass (FastNAS iterates twice+)."""

    split: BatchSource
    seed: int
    limit: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.split.batches(BATCH_SIZE, shuffle=True, seed=self.seed, limit=self.limit)


def _fastnas_rules(round_to: int) -> Any:
    """Return FastNAS's default rules with every channel/feature divisor set to ``round_to``."""
    from modelopt.torch.prune.fastnas import FastNASConfig

    rules = FastNASConfig()
    for alias in rules:
        for rule in (rules[alias] or {}).values():
            if not isinstance(rule, dict):
                continue
            for key in ("channel_divisor", "feature_divisor"):
                if key in rule:
                    rule[key] = round_to
    return rules


def _resize_bn_queue(model: nn.Module, batches: int) -> None:
    """Make FastNAS's BatchNorm-recalibration queue hold exactly ``batches`` batches.

    FastNAS only recalibrates from a *full* queue (50 batches by default); with fewer
    batches it would score every subnet with stale BatchNorm statistics.
    """
    from modelopt.torch.nas.patch import PatchManager

    data = PatchManager.get_manager(model).patch_data
    if not isinstance(data.get("queue"), deque):
        logger.warning(
            "FastNAS: no BatchNorm queue in modelopt's patch data; subnets may be scored "
            "without recalibration unless %d+ batches are given",
            50,
        )
        return
    data["queue"] = deque(maxlen=batches)


def _snap(group: ChannelGroup, width: int) -> int:
    """Return the allowed width of ``group`` nearest to ``width`` (the narrower on a tie)."""
    return min(group.allowed_widths(), key=lambda allowed: (abs(allowed - width), allowed))


def _kept_width(module: nn.Module) -> int:
    """Return the output channels/features of a (pruned) layer."""
    for attribute in ("out_channels", "out_features", "num_features"):
        value = getattr(module, attribute, None)
        if isinstance(value, int):
            return value
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"cannot read the width of {type(module).__name__}")
    return int(weight.shape[0])


def fastnas_plan(
    problem: PruningProblem, flops_fraction: float, *, seed: int = 0, score_batches: int = 4
) -> Plan:
    """Return the per-group widths NVIDIA ModelOpt's FastNAS chooses for problem.model at
    flops_fraction of its FLOPs.

    Runs ``modelopt.torch.nas.convert(copy, [("fastnas", rules)], registry=PruneModeRegistry)``
    then ``modelopt.torch.nas.search(copy, {"flops": "<p>%"}, dummy_input, config)``,
    exactly what ``modelopt.torch.prune.prune(mode="fastnas")`` does, with the
    BatchNorm queue resized in between (see the module docstring). ``problem.model`` is
    never modified; FastNAS works on a deep copy.

    Args:
        problem: the pruning job: model, data splits, groups, MACs budget.
        flops_fraction: the FLOPs limit FastNAS searches under, as a fraction of the
            unpruned model's (``0 < flops_fraction <= 1``), normally
            ``spec.budget.flops``.
        seed: seeds the shuffling of the training batches used for recalibration.
        score_batches: training batches of 64 that recalibrate BatchNorm before each
            score (``score_func`` is validation top-1 on ``problem.data.val``).

    Returns:
        A valid :class:`~models.prune.Plan` of ``problem``'s groups that fits its budget.

    Raises:
        ValueError: ``flops_fraction`` not in (0, 1] or ``score_batches`` below 1.
        ImportError: nvidia-modelopt or torchprofile is not installed (``pip install -e
            '.[bench]'``).
        AssertionError: FastNAS's own checks fail, e.g. even its narrowest subnet breaks
            the FLOPs limit.
        BudgetUnreachableError: no plan meets our MACs budget.
    """
    if not 0.0 < flops_fraction <= 1.0:
        raise ValueError(f"flops_fraction must be in (0, 1], got {flops_fraction}")
    if score_batches < 1:
        raise ValueError(f"score_batches must be at least 1, got {score_batches}")
    import modelopt.torch.nas as mtn
    from modelopt.torch.nas.utils import inference_flops
    from modelopt.torch.prune.pruning import PruneModeRegistry

    started = time.perf_counter()
    model = copy.deepcopy(problem.model)
    device = next(model.parameters()).device
    dummy_input = torch.zeros((1, *problem.input_shape), device=device)
    val = problem.data.val

    def score(candidate: nn.Module) -> float:
        return evaluate(candidate, val).top1

    config: dict[str, Any] = {
        "checkpoint": None,  # nothing is written to disk
        "verbose": False,
        "data_loader": _TrainBatches(problem.data.train, seed, score_batches),
        "collect_func": lambda batch: batch[0],  # (inputs, labels) -> inputs
        "max_iter_data_loader": score_batches,
        "score_func": score,
    }
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        model = mtn.convert(
            model,
            [("fastnas", _fastnas_rules(problem.spec.pruning.round_to))],
            registry=PruneModeRegistry,
        )
        _resize_bn_queue(model, score_batches)
        pruned, state = mtn.search(
            model, {"flops": f"{flops_fraction * 100:.10g}%"}, dummy_input, config
        )
    if printed.getvalue().strip():
        logger.debug("FastNAS printed:\n%s", printed.getvalue().rstrip())
    for message in {str(w.message) for w in caught}:
        log = logger.warning if "queue not filled" in message else logger.debug
        log("FastNAS warned: %s", message)

    modules = dict(pruned.named_modules())
    chosen, whole = {}, []
    for group in problem.space.groups:
        width = _kept_width(modules[group.name])
        chosen[group.name] = _snap(group, width)
        if width != chosen[group.name]:
            logger.info(
                "FastNAS kept %d of %s; rounded to %d", width, group.name, chosen[group.name]
            )
        if width == group.channels:
            whole.append(group.name)
    if whole:
        logger.info("FastNAS left %d group(s) whole: %s", len(whole), ", ".join(whole))
    plan = problem.space.project(validate_plan(chosen, problem.graph))
    base = problem.baseline.cost.macs
    logger.info(
        "FastNAS at %.4g of FLOPs: %.4g by its own count, %.4g of our MACs as chosen, "
        "%.4g projected; unpruned val top-1 %.4f (%.4f recalibrated); %.1f s",
        flops_fraction,
        inference_flops(pruned, dummy_input, unit=1.0)
        / inference_flops(copy.deepcopy(problem.model), dummy_input, unit=1.0),
        problem.space.predict(chosen).macs / base,
        problem.space.predict(plan).macs / base,
        problem.baseline.val_accuracy,
        state.get("original_score", math.nan),
        time.perf_counter() - started,
    )
    return plan


if __name__ == "__main__":
    import os
    import sys
    import tempfile

    from search import JobSpec, load_problem

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    FRACTION = 0.25
    spec = JobSpec.model_validate(
        {
            "arch": "resnet20_cifar",
            "input_shape": [3, 32, 32],
            "dataset": "digits",
            "budget": {"flops": FRACTION},
            "search": {"trials": 1},
            "pruning": {"round_to": 4},
        }
    )
    weights = os.environ.get("FASTNAS_WEIGHTS")  # e.g. an `inferprune train` checkpoint
    if weights is None:
        print("FASTNAS_WEIGHTS not set: random weights (a smoke run)", file=sys.stderr)
    problem = load_problem(spec, weights=weights)
    before = set(os.listdir(os.getcwd())) | set(os.listdir(tempfile.gettempdir()))
    started = time.perf_counter()
    plan = fastnas_plan(problem, FRACTION)
    seconds = time.perf_counter() - started
    after = set(os.listdir(os.getcwd())) | set(os.listdir(tempfile.gettempdir()))
    ratio = problem.space.predict(plan).macs / problem.baseline.cost.macs
    print(plan.to_dict())
    print(f"MACs ratio {ratio:.4f} (budget {FRACTION}), {seconds:.1f} s")
    assert validate_plan(plan, problem.graph) == plan
    assert problem.space.fits(plan), "plan breaks the budget"
    assert ratio <= FRACTION + 1e-9
    assert after <= before, f"files left behind: {sorted(after - before)}"
