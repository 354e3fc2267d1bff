"""One pruning with a given plan (or Torch-Pruning's uniform ratio), no search.

``inferprune apply`` is this function plus argument parsing and a table. With a
fine-tune, the plan may be reached along a pruning schedule (:mod:`models.schedules`).
A hybrid sequence of channel, kernel and weight steps may replace or follow the plan
(:func:`search.hybrid.prune_hybrid`). Weight steps (AGP magnitude pruning of LSTM/GRU
weights) are gradual: with a fine-tune, every other step runs at once and the weight
steps' sparsity is reached along Zhu & Gupta's cubic over the first half of the
fine-tune (:class:`models.prune.AgpRecurrentMasking`); without one they apply at once.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.cost import Cost, SparseCost, measure_cost, measure_sparse_cost
from models.data import load_dataset
from models.device import resolve_device
from models.io import CheckpointInfo, load_model
from models.prune import (
    CALIBRATION_BATCHES,
    AgpRecurrentMasking,
    KernelMasks,
    Plan,
    PruningStep,
    build_pruning_graph,
    complete_plan,
    has_recurrent_weights,
    keep_kernels_masked,
    uniform_plan,
)
from models.schedules import (
    AGP_PRUNING_SHARE,
    Schedule,
    ScheduleConfig,
    ScheduleContext,
    ScheduledModel,
    make_schedule,
    train_with_schedule,
)
from models.train import (
    OptimizerCarry,
    TrainProgress,
    evaluate,
    fine_tune,
    recalibrate_batchnorm,
    steps_per_epoch,
    total_steps,
)
from search.errors import SpecError
from search.hybrid import prune_hybrid

__all__ = ["OneShotResult", "WEIGHT_MASK_UPDATES", "apply_once"]

WEIGHT_MASK_UPDATES = 20
"""A gradual weight step recomputes its masks this many times along the AGP curve (Zhu &
Gupta prune every few steps, not every step), as the recurrent benchmark does."""


@dataclass(frozen=True)
class OneShotResult:
    """A pruned model, its checkpoint metadata and what the pruning changed.

    Attributes:
        model: the physically smaller model.
        info: metadata to save it with (``models.io.save_pruned``): arch, classes, input
            shape, the full plan (every group's width), the criterion.
        before: the unpruned model's cost.
        after: the pruned model's cost.
        val_accuracy: validation accuracy after BN recalibration and the optional
            fine-tune; None without a data set.
        schedule: how the plan was reached: ``{"name": "one_shot"}``, or a schedule's
            record (:meth:`models.schedules.ScheduledModel.to_dict`).
    """

    model: nn.Module
    info: CheckpointInfo
    before: Cost
    after: Cost
    val_accuracy: float | None
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "one_shot"})

    def to_dict(self) -> dict[str, Any]:
        """Return the result as ``apply --json`` prints it (without the output path)."""
        before, after = self.before, self.after
        return {
            "arch": self.info.arch,
            "criterion": self.info.extra.get("criterion"),
            "plan": self.info.plan.to_dict(),
            "before": {
                "macs": before.macs,
                "params": before.params,
                "size_bytes": before.size_bytes,
            },
            "after": {
                "macs": after.macs,
                "params": after.params,
                "size_bytes": after.size_bytes,
                **_sparse_counts(after),
            },
            "macs_ratio": after.macs / before.macs,
            "params_ratio": after.params / before.params,
            "val_accuracy": self.val_accuracy,
            "schedule": self.schedule,
        }


def apply_once(
    *,
    arch: str | None,
    weights: str | os.PathLike[str] | None,
    plan: Plan | None = None,
    ratio: float | None = None,
    criterion: str = "l1",
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    dataset: str | None = None,
    data_root: Path | None = None,
    finetune_epochs: float | None = None,
    lr: float = 0.01,
    round_to: int = 8,
    seed: int = 0,
    on_step: Callable[[TrainProgress], None] | None = None,
    device: torch.device | str | None = None,
    schedule: ScheduleConfig | None = None,
    sequence: Sequence[PruningStep] | None = None,
) -> OneShotResult:
    """Prune a model once: every group keeps what ``plan`` says, or loses the fraction
    ``ratio`` of its channels; with a data set, recalibrate BatchNorm, optionally
    fine-tune (reaching the plan at once or along a ``schedule``), and measure
    validation accuracy.

    Args:
        arch: zoo name; None when ``weights`` is a checkpoint that names it.
        weights: the unpruned weights (safetensors, a state_dict, or a `train` checkpoint).
        plan: channels kept per group; exactly one of ``plan`` and ``ratio``.
        ratio: the fraction of every group's channels to remove, 0 <= ratio < 1.
        criterion: which channels go (a :mod:`models.criteria` name).
        num_classes: classes, when neither the architecture nor the checkpoint fix them.
        input_shape: (C, H, W), or (T, F) for a recurrent model; likewise.
        dataset: a data set name (``digits``, ``npz:path`` …) for calibration batches,
            BatchNorm recalibration, fine-tuning and validation.
        data_root: where local data sets live.
        finetune_epochs: fine-tune this long after pruning (needs ``dataset``).
        lr: fine-tuning learning rate.
        round_to: channel multiple of the uniform plan.
        seed: seeds the data split, calibration batches and fine-tune.
        on_step: fine-tune progress.
        device: where recalibration, fine-tuning and validation run (see
            :func:`models.device.resolve_device`; None reads ``INFERPRUNE_DEVICE``).
            Pruning happens on the CPU, and the result is returned there.
        schedule: how the plan is reached over the fine-tune (None: one_shot, prune
            then fine-tune); any other schedule needs ``finetune_epochs``.
        sequence: hybrid pruning steps: alone, all of them run in order; beside a plan
            or ratio (which stands for the channel steps), its kernel steps follow it.
            Removed kernels stay zero through the fine-tune; the result's ``info``
            records them. Weight steps (recurrent models) must come last when a
            fine-tune follows: their sparsity (the largest amount) is then reached along
            AGP over the first half of the fine-tune, from the zeros the model already
            has, and held to the end; without a fine-tune they apply at once. Not with a
            schedule other than one_shot.

    Raises:
        SpecError: neither or both of plan and ratio; a fine-tune without a data set;
            a schedule without a fine-tune; an already pruned checkpoint.
        ModelsError: the model, weights, plan or data cannot be used, or the device is
            not there.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    if (plan is not None and ratio is not None) or (
        plan is None and ratio is None and not sequence
    ):
        raise SpecError("give exactly one of a plan and a ratio, or a sequence")
    if finetune_epochs and not dataset:
        raise SpecError("fine-tuning needs a data set to train on")
    config = schedule or ScheduleConfig()
    scheduler = make_schedule(config)
    if config.name != "one_shot" and not finetune_epochs:
        raise SpecError(
            f"the {config.name} schedule prunes over a fine-tune: give it fine-tuning epochs",
            fields=("pruning.schedule",),
        )
    if sequence and config.name != "one_shot":
        raise SpecError(
            f"pruning.sequence prunes at once; it cannot follow the {config.name} schedule",
            fields=("pruning.sequence",),
        )
    model, info = load_model(arch, weights, num_classes=num_classes, input_shape=input_shape)
    if len(info.plan):
        raise SpecError("this checkpoint is already pruned; prune the unpruned model instead")
    shape = info.input_shape
    if any(s.granularity == "weight" for s in sequence or ()) and not has_recurrent_weights(model):
        raise SpecError(
            "pruning.sequence: weight steps prune the weights of LSTM/GRU layers, and this "
            "model has none; prune a convolutional model with channel or kernel steps",
            fields=("pruning.sequence",),
        )
    graph = build_pruning_graph(model, shape, round_to=round_to)
    if plan is None and ratio is not None:
        plan = uniform_plan(graph, ratio)
    if plan is not None and graph.removed_blocks(plan) and (config.name != "one_shot" or sequence):
        raise SpecError(
            "this plan removes residual blocks, which only the one_shot schedule without a "
            "sequence does; give it widths only, or drop --schedule/--sequence",
            fields=("pruning.schedule", "pruning.sequence"),
        )
    data = None
    calib = None
    if dataset:
        data = load_dataset(
            dataset, input_shape=shape, num_classes=info.num_classes, root=data_root, seed=seed
        )
        calib = list(data.train.batches(32, shuffle=True, seed=seed, limit=CALIBRATION_BATCHES))
    before = measure_cost(model, shape)
    val = None
    record: dict[str, Any] = {"name": "one_shot"}
    masks = KernelMasks()
    if config.name == "one_shot":
        at_once, gradual = _split_gradual(sequence, bool(finetune_epochs))
        if at_once or plan is not None:
            hybrid = prune_hybrid(model, plan, at_once, criterion, calib, graph=graph, seed=seed)
            pruned, plan, masks = hybrid.model, hybrid.plan, hybrid.masks
        else:  # weight steps alone, all of them along the fine-tune
            pruned, plan = copy.deepcopy(model).eval(), Plan({})
        if data is not None:
            pruned.to(target)
            recalibrate_batchnorm(pruned, data.train, seed=seed)
            if finetune_epochs:
                with keep_kernels_masked(pruned, masks):
                    record = _fine_tune(
                        pruned, data.train, finetune_epochs, lr, seed, on_step, gradual
                    )
    else:
        assert finetune_epochs and data is not None and calib is not None and plan is not None
        scheduled = _train_scheduled(
            model.to(target),
            plan,
            scheduler,
            ScheduleContext(
                graph=graph, train=data.train, calibration=calib, val=data.val, seed=seed
            ),
            criterion=criterion,
            epochs=finetune_epochs,
            lr=lr,
            on_step=on_step,
        )
        pruned, record = scheduled.model, scheduled.to_dict()
    if data is not None:
        val = evaluate(pruned, data.val).top1
        pruned.cpu()
    out = CheckpointInfo(
        info.arch,
        info.num_classes,
        shape,
        complete_plan(plan, graph),
        round_to=round_to,
        normalization=info.normalization,
        extra=_extra(criterion, sequence),
        kernel_masks=masks,
    )
    return OneShotResult(pruned, out, before, measure_sparse_cost(pruned, shape), val, record)


def _split_gradual(
    sequence: Sequence[PruningStep] | None, fine_tuned: bool
) -> tuple[list[PruningStep], float | None]:
    """Split ``sequence`` into the steps run at once and, when a fine-tune follows, the
    sparsity its weight steps reach along AGP (None: no weight step, or no fine-tune).

    Raises:
        SpecError: a fine-tune follows, and a channel or kernel step comes after a
            weight step (it could not run at once after a gradual one).
    """
    steps = list(sequence or ())
    weight = [k for k, step in enumerate(steps) if step.granularity == "weight"]
    if not fine_tuned or not weight:
        return steps, None
    if any(step.granularity != "weight" for step in steps[weight[0] :]):
        raise SpecError(
            "pruning.sequence: weight steps reach their sparsity gradually over the "
            "fine-tune, so with a fine-tune they must come last; move the channel and "
            "kernel steps before them",
            fields=("pruning.sequence",),
        )
    return steps[: weight[0]], max(steps[k].amount for k in weight)


def _fine_tune(
    model: nn.Module,
    train: Any,
    epochs: float,
    lr: float,
    seed: int,
    on_step: Callable[[TrainProgress], None] | None,
    sparsity: float | None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (batches of 64); with a ``sparsity``, its recurrent weights
    reach it along AGP over the first :data:`AGP_PRUNING_SHARE` of the steps (masks
    updated :data:`WEIGHT_MASK_UPDATES` times) and keep it to the end. Returns the
    schedule record."""
    record: dict[str, Any] = {"name": "one_shot"}
    callback = on_step
    masking = None
    if sparsity is not None:
        total = total_steps(epochs, None, steps_per_epoch(len(train), 64))
        end = max(1, round(total * AGP_PRUNING_SHARE))
        every = max(1, end // WEIGHT_MASK_UPDATES)
        masking = AgpRecurrentMasking(model, sparsity, end, every=every)
        record["weights"] = {
            "method": "agp",
            "initial_sparsity": round(masking.initial, 6),
            "sparsity": sparsity,
            "end_step": end,
            "every": every,
            "steps": total,
        }

        def callback(progress: TrainProgress) -> None:
            assert masking is not None
            masking(progress)
            if on_step is not None:
                on_step(progress)

    fine_tune(model, train, epochs=epochs, lr=lr, seed=seed, batch_size=64, on_step=callback)
    if masking is not None:
        masking.masks.apply(model)  # a stopped fine-tune still leaves the masks' zeros
    return record


def _extra(criterion: str, sequence: Sequence[PruningStep] | None) -> dict[str, str]:
    extra = {"criterion": criterion}
    if sequence:
        extra["sequence"] = json.dumps([s.to_dict() for s in sequence])
    return extra


def _sparse_counts(cost: Cost) -> dict[str, int]:
    """Non-zero parameters and effective MACs of a kernel-pruned model (else nothing)."""
    if not isinstance(cost, SparseCost):
        return {}
    return {"nonzero_params": cost.nonzero_params, "effective_macs": cost.effective_macs}


def _train_scheduled(
    model: nn.Module,
    plan: Plan,
    schedule: Schedule,
    context: ScheduleContext,
    *,
    criterion: str,
    epochs: float,
    lr: float,
    on_step: Callable[[TrainProgress], None] | None,
) -> ScheduledModel:
    """Prune ``model`` to ``plan`` along ``schedule`` while fine-tuning it ``epochs``
    (batches of 64, as the one-shot fine-tune)."""
    total = total_steps(epochs, None, steps_per_epoch(len(context.train), 64))
    carry = OptimizerCarry()  # momentum goes on while a segment trains the same model

    def trainer(pruned: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        def progress(p: TrainProgress) -> None:
            assert on_step is not None
            on_step(dataclasses.replace(p, step=start + p.step, total_steps=total))

        fine_tune(
            pruned,
            context.train,
            steps=steps,
            lr=lr,
            seed=context.seed,
            start_step=start,
            lr_window=window,
            on_step=progress if on_step is not None else None,
            carry=carry,
        )

    return train_with_schedule(
        model,
        plan,
        schedule,
        total_steps=total,
        criterion=criterion,
        context=context,
        trainer=trainer,
    )
