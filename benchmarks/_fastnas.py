"""NVIDIA ModelOpt's FastNAS as a one-shot way to choose per-group widths.

FastNAS (``modelopt.torch.prune``, mode ``"fastnas"``) turns a copy of the model into a
search space whose hyperparameters are the output widths of the layers that produce
independent channel sets; residual adds are traced, so channels joined by an add form
one hyperparameter, named after the first layer producing them (``conv1``,
``layer2.0.conv2``, ...: on resnet20_cifar the same roots as our groups, bar the one
noted below). FastNAS then:

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
* FastNAS does not narrow channels that reach the classifier through global pooling and
  ``torch.flatten``: its tracer cannot carry the channel dimension into the ``Linear``'s
  features, so the hyperparameter is disabled. On resnet20_cifar that is our group
  ``layer3.0.conv2`` (the 64 stage-3 residual channels), which our groups do prune
  (``fc``'s inputs shrink with it); FastNAS keeps it whole and meets the FLOPs limit
  with the other 11 groups (checked: with a 1x1 conv inserted before the pooling it
  becomes searchable). Any group FastNAS offers no narrower width for is logged and
  stays whole, subject only to the projection.
* FastNAS's bisection over one threshold is coarse, so its subnet usually lands a few
  percent under the FLOPs limit (resnet20_cifar on digits: 0.226 of our MACs at 0.25,
  0.463 at 0.5, 0.100 at 0.125); the unused budget is not handed back.
* No search checkpoint is written (``checkpoint=None``) and nothing is downloaded.
  What FastNAS prints (a progress bar, profiling tables) and warns is logged at DEBUG.
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
            "FastNAS: no BatchNorm queue in modelopt's patch data (modelopt changed?); "
            "subnets may be scored without BatchNorm recalibration"
        )
        return
    data["queue"] = deque(maxlen=batches)


def _log_output(text: str) -> None:
    """Log what FastNAS printed (progress bars reduced to their last state)."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    if any(lines):
        logger.debug("FastNAS printed:\n%s", "\n".join(line for line in lines if line))


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
        ValueError: ``flops_fraction`` not in (0, 1] or ``score_batches`` below 1, or
            even FastNAS's narrowest subnet breaks the FLOPs limit.
        ImportError: nvidia-modelopt or torchprofile is not installed (``pip install -e
            '.[bench]'``).
        BudgetUnreachableError: no plan meets our MACs budget.
    """
    if not 0.0 < flops_fraction <= 1.0:
        raise ValueError(f"flops_fraction must be in (0, 1], got {flops_fraction}")
    if score_batches < 1:
        raise ValueError(f"score_batches must be at least 1, got {score_batches}")
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
    output = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
    ):
        warnings.simplefilter("always")
        import modelopt.torch.nas as mtn
        from modelopt.torch.nas.utils import inference_flops
        from modelopt.torch.opt.utils import named_hparams
        from modelopt.torch.prune.pruning import PruneModeRegistry

        model = mtn.convert(
            model,
            [("fastnas", _fastnas_rules(problem.spec.pruning.round_to))],
            registry=PruneModeRegistry,
        )
        searchable = {
            name.rpartition(".")[0] for name, _ in named_hparams(model, configurable=True)
        }
        _resize_bn_queue(model, score_batches)
        try:
            pruned, state = mtn.search(
                model, {"flops": f"{flops_fraction * 100:.10g}%"}, dummy_input, config
            )
        except ValueError as exc:
            if "NOT all constraints can be satisfied" not in str(exc):
                raise
            logger.debug("modelopt's profile of the search space:\n%s", exc)
            raise ValueError(
                f"FastNAS cannot reach {flops_fraction:.4g} of the FLOPs: even its narrowest "
                "subnet is over the limit (groups it cannot narrow stay whole)"
            ) from None
        own_ratio = inference_flops(pruned, dummy_input, unit=1.0) / inference_flops(
            copy.deepcopy(problem.model), dummy_input, unit=1.0
        )
    _log_output(output.getvalue())
    for message in sorted({str(w.message).strip() for w in caught}):
        log = logger.warning if "queue not filled" in message else logger.debug
        log("FastNAS warned: %s", message)
    fixed = [g.name for g in problem.space.groups if g.name not in searchable]
    if fixed:
        logger.info("FastNAS offers no narrower width for (keeps whole): %s", ", ".join(fixed))

    modules = dict(pruned.named_modules())
    chosen: dict[str, int] = {}
    for group in problem.space.groups:
        width = _kept_width(modules[group.name])
        chosen[group.name] = _snap(group, width)
        if width != chosen[group.name]:
            logger.info(
                "FastNAS kept %d of %s: rounded to %d", width, group.name, chosen[group.name]
            )
    plan = problem.space.project(validate_plan(chosen, problem.graph))
    base = problem.baseline.cost.macs
    logger.info(
        "FastNAS at %.4g of FLOPs: %.4g by its own count, %.4g of our MACs as chosen, "
        "%.4g projected; unpruned val top-1 %.4f (%.4f recalibrated); %.1f s",
        flops_fraction,
        own_ratio,
        problem.space.predict(chosen).macs / base,
        problem.space.predict(plan).macs / base,
        problem.baseline.val_accuracy,
        state.get("original_score", math.nan),
        time.perf_counter() - started,
    )
    return plan


if __name__ == "__main__":
    # Self-check: .venv/bin/python benchmarks/_fastnas.py [WEIGHTS]  (random weights if
    # none; e.g. `inferprune train --arch resnet20_cifar --dataset digits --epochs 3 -o F`)
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
    weights = sys.argv[1] if len(sys.argv) > 1 else None
    if weights is None:
        print("no weights given: random weights (a smoke run only)", file=sys.stderr)
    problem = load_problem(spec, weights=weights)
    original = copy.deepcopy(problem.model.state_dict())
    with tempfile.TemporaryDirectory(prefix="fastnas-check-") as private:
        tempfile.tempdir, os.environ["TMPDIR"] = private, private  # catch stray temp files
        cwd_before = set(os.listdir())
        started = time.perf_counter()
        plan = fastnas_plan(problem, FRACTION)
        seconds = time.perf_counter() - started
        left = os.listdir(private)
        cwd_new = set(os.listdir()) - cwd_before
    ratio = problem.space.predict(plan).macs / problem.baseline.cost.macs
    print(plan.to_dict())
    print(f"MACs ratio {ratio:.4f} (budget {FRACTION}), {seconds:.1f} s")
    assert validate_plan(plan, problem.graph) == plan
    assert problem.space.fits(plan) and ratio <= FRACTION, "plan breaks the budget"
    assert all(torch.equal(v, problem.model.state_dict()[k]) for k, v in original.items())
    assert not left, f"temporary files left behind: {left}"
    assert not cwd_new, f"new files in the working directory: {sorted(cwd_new)}"
    print("self-check passed")
