"""Fine-tuning: SGD with momentum and a cosine schedule, optionally distilling a teacher."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.data._split import BatchSource
from models.errors import DataError, TrainingDivergedError
from models.train._batches import LabelChecks, Tensors, module_device, on_device
from models.train._batchnorm import tracking_batchnorms
from models.train._carry import OptimizerCarry
from models.train._distill import distillation_loss
from models.train._loss_reads import LossReads, NonFiniteLoss
from models.train._schedule import cosine_lr, steps_per_epoch, total_steps
from models.train._soft_targets import SoftTargets

__all__ = ["TrainProgress", "TrainResult", "fine_tune"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainProgress:
    """Where a fine-tune is, reported after every step (for progress bars and logs).

    Attributes:
        step: steps done so far, from 1 to ``total_steps``.
        total_steps: steps the fine-tune will take if not stopped.
        epoch: passes over the data done so far (fractional).
        loss: training loss of the latest batch read back: this step's on the CPU; on
            an accelerator losses are read every few steps
            (:data:`models.train._loss_reads.ACCELERATOR_READ_EVERY`), so as not to wait
            for the device every step.
        lr: learning rate this step used.
    """

    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tune did.

    Attributes:
        steps: optimizer steps taken (fewer than planned if stopped).
        epochs: passes over the data those steps made (fractional).
        final_loss: mean training loss of the last tenth of the planned steps (at least
            one step); NaN if no step was taken.
        seconds: wall-clock time spent.
        stopped: ``should_stop`` ended the fine-tune early.
    """

    steps: int
    epochs: float
    final_loss: float
    seconds: float
    stopped: bool


def _check_hyperparameters(
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    distill_weight: float,
    temperature: float,
) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be zero or positive, got {weight_decay}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= distill_weight <= 1:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")


def _local_rng(device: torch.device) -> AbstractContextManager[None]:
    """Return a context that restores the global RNG state(s) the fine-tune reseeds."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.accelerator.current_device_index()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Return the mixed-precision type for ``device``: bfloat16 on CUDA GPUs that support
    it, else float16 on CUDA; None (float32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Return autocast to ``dtype`` on ``device``, or a context that changes nothing."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _stream(
    batches: Callable[..., Iterator[Tensors]],
    samples: int,
    per_epoch: int,
    total: int,
    seed: int,
    start: int = 0,
) -> Iterator[Tensors]:
    """Yield ``total`` training batches of ``batches`` (a split's, or its soft targets'),
    reshuffled every epoch with ``seed + epoch``, beginning where a run that already took
    ``start`` steps would be."""
    served = 0
    epoch, skip = divmod(start, per_epoch)
    while served < total:
        served_before = served
        for index, batch in enumerate(batches(shuffle=True, seed=seed + epoch, limit=per_epoch)):
            if index < skip:
                continue
            yield batch
            served += 1
            if served == total:
                return
        if served == served_before and not skip:
            raise DataError(f"the training split has {samples} samples but gave no batch")
        skip = 0
        epoch += 1


def _diverged(step: int, total: int, what: str, lr: float, base_lr: float) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged at step {step} of {total}: {what} (learning rate {lr:.3g}). "
        f"Lower the learning rate (for example lr={base_lr / 10:g}) and try again."
    )


def _raise_if_diverged(bad: NonFiniteLoss | None, total: int, base_lr: float) -> None:
    if bad is not None:
        raise _diverged(bad.step, total, f"the loss became {bad.value}", bad.lr, base_lr)


def fine_tune(
    model: nn.Module,
    data: BatchSource,
    *,
    epochs: float | None = None,
    steps: int | None = None,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    start_step: int = 0,
    teacher: nn.Module | SoftTargets | None = None,
    distill_weight: float = 0.5,
    temperature: float = 4.0,
    on_step: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    amp: bool = False,
    lr_window: tuple[int, int] | None = None,
    carry: OptimizerCarry | None = None,
    last_batch_statistics: bool = False,
) -> TrainResult:
    """Train ``model`` in place on ``data``; return what the fine-tune did.

    SGD with Nesterov momentum and weight decay; the learning rate decays from ``lr``
    to zero along half a cosine over the planned steps. Every epoch reshuffles the data
    with ``seed + epoch`` and uses only full batches: an epoch is
    ``len(data) // batch_size`` steps (one step if the split is smaller than a batch).
    The global torch RNG is reseeded with ``seed`` for the duration (and restored
    afterwards), so the same seed, data and model give bit-identical weights on the same
    machine and thread count. Parameters
    with ``requires_grad=False`` are not trained. The model is left in eval mode, also
    when an error is raised.

    With a ``teacher`` (typically the unpruned model) the loss mixes cross-entropy with
    the distillation loss of Hinton et al.:
    ``(1 - distill_weight) · CE + distill_weight · T² · KL(teacher ‖ student)`` at
    temperature ``T``. The teacher runs in eval mode without autograd and is never
    changed; its train/eval mode is restored afterwards. A :class:`SoftTargets` of
    ``data`` stands in for the teacher with the logits it gave each sample once: the
    same loss and the same batches, without a teacher pass per step.

    Args:
        model: the classifier to train, giving (B, num_classes) logits.
        data: the training split.
        epochs: passes over the data, may be fractional (0.5 = half the batches of one
            epoch, rounded to the nearest step). Give this or ``steps``.
        steps: optimizer steps. Give this or ``epochs``.
        lr: initial learning rate.
        momentum: SGD momentum, in [0, 1) (Nesterov when positive).
        weight_decay: L2 penalty applied by SGD to every trained parameter.
        batch_size: samples per step.
        seed: seeds the shuffles and any randomness in the model (dropout).
        start_step: steps this model already trained with the same ``seed`` and batch
            size: the data continue where those steps left off (a candidate promoted
            to a longer rung sees the next batches, not the first ones again). The
            learning-rate decay covers this call's steps only.
        teacher: a frozen model to distill from, its :class:`SoftTargets` on ``data``,
            or ``None`` for plain cross-entropy.
        distill_weight: share of the distillation term, in [0, 1].
        temperature: softening temperature of the distillation term.
        on_step: called after every step with a :class:`TrainProgress`.
        should_stop: polled before every step; once it returns true the fine-tune
            ends and the result says ``stopped``.
        amp: mixed precision on a CUDA model: bfloat16 autocast where the GPU supports
            it, else float16 with loss scaling. Ignored on other devices (the CPU trains
            in float32), so a job's setting is safe on any worker.
        lr_window: ``(offset, total)``: this call's steps are steps ``offset`` to
            ``offset + steps`` of one cosine from ``lr`` to zero over ``total`` steps
            (a run trained in pieces, such as a pruning schedule's segments, follows a
            single decay). None: the decay covers this call's steps only.
        carry: for a fine-tune trained in segments: while the trainable parameters are
            the same objects as in the call before, that call's optimizer goes on (its
            momentum carries over); None: a fresh optimizer.
        last_batch_statistics: the last step's batch alone sets every tracking
            BatchNorm layer's running statistics (momentum 1 for that step; each layer's
            own is restored afterwards): a one-batch re-estimate at no extra forward,
            for when the running averages cannot be trusted yet (a few steps after
            pruning they still hold the unpruned model's). The weights that batch saw
            are those before the last update, which a decay to zero barely moves.

    Returns:
        The :class:`TrainResult`.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite; the
            message names the step. The model's weights are then unusable.
        DataError: ``data`` is empty, or its labels do not fit the model's outputs.
        ValueError: an argument is out of range, neither or both of ``epochs`` and
            ``steps`` are given, ``lr_window`` does not hold the steps, ``teacher`` is
            ``model`` or soft targets of another split, or the model has no trainable
            parameter.
    """
    _check_hyperparameters(lr, momentum, weight_decay, batch_size, distill_weight, temperature)
    if start_step < 0:
        raise ValueError(f"start_step must be zero or positive, got {start_step}")
    if teacher is model:
        raise ValueError("the teacher must be a separate model (e.g. a copy made before pruning)")
    if isinstance(teacher, SoftTargets) and teacher.split is not data:
        raise ValueError("the soft targets belong to another split than the one to train on")
    samples = len(data)
    if samples == 0:
        raise DataError("there are no samples to fine-tune on; the training split is empty")
    per_epoch = steps_per_epoch(samples, batch_size)
    total = total_steps(epochs, steps, per_epoch)
    lr_offset, lr_total = lr_window if lr_window is not None else (0, total)
    if lr_offset < 0 or lr_total < lr_offset + total:
        raise ValueError(
            f"lr_window {lr_window} does not hold this call's {total} steps after its offset"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter (all have requires_grad=False)")

    def sgd() -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )

    optimizer = carry.optimizer_for(params, sgd) if carry is not None else sgd()
    device = module_device(model)
    live_teacher = teacher if isinstance(teacher, nn.Module) else None
    teacher_device = module_device(live_teacher) if live_teacher is not None else device
    precision = _autocast_dtype(device) if amp else None
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None
    teacher_was_training = live_teacher.training if live_teacher is not None else False
    losses = LossReads(device, keep=total // 10)
    done = 0
    step_lr = lr
    stopped = False
    start = time.perf_counter()
    source = teacher.batches if isinstance(teacher, SoftTargets) else data.batches
    batchnorms = tracking_batchnorms(model) if last_batch_statistics else []
    momenta = [layer.momentum for layer in batchnorms]
    try:
        with _local_rng(device):
            torch.manual_seed(seed + start_step)
            model.train()
            if live_teacher is not None:
                live_teacher.eval()
            stream = _stream(
                functools.partial(source, batch_size),
                samples,
                per_epoch,
                total,
                seed,
                start_step,
            )
            labels_fit = LabelChecks()
            for step, (inputs, labels, *kept) in enumerate(
                on_device(labels_fit.on_cpu(stream), device)
            ):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                if last_batch_statistics and step == total - 1:
                    for layer in batchnorms:
                        layer.momentum = 1.0
                step_lr = cosine_lr(lr, lr_offset + step, lr_total)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                with _autocast(device, precision):
                    logits = model(inputs)
                    labels_fit.after_forward(step, logits, labels)
                    if teacher is None:
                        loss = F.cross_entropy(logits.float(), labels)
                    else:
                        if live_teacher is None:
                            (soft_targets,) = kept  # the split's logits, computed once
                        else:
                            with torch.no_grad():
                                soft_targets = live_teacher(inputs.to(teacher_device)).to(device)
                        loss = distillation_loss(
                            logits.float(),
                            soft_targets.float(),
                            labels,
                            weight=distill_weight,
                            temperature=temperature,
                        )
                _raise_if_diverged(losses.add(step + 1, step_lr, loss), total, lr)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                done = step + 1
                if on_step is not None:
                    on_step(TrainProgress(done, total, done / per_epoch, losses.last, step_lr))
            _raise_if_diverged(losses.flush(), total, lr)
            if done and not all(bool(torch.isfinite(p).all()) for p in params):
                raise _diverged(done, total, "the weights became NaN or infinite", step_lr, lr)
    finally:
        for layer, layer_momentum in zip(batchnorms, momenta, strict=True):
            layer.momentum = layer_momentum
        model.eval()
        if live_teacher is not None:
            live_teacher.train(teacher_was_training)
    seconds = time.perf_counter() - start
    result = TrainResult(
        steps=done,
        epochs=done / per_epoch,
        final_loss=sum(losses.recent) / len(losses.recent) if losses.recent else math.nan,
        seconds=seconds,
        stopped=stopped,
    )
    logger.debug(
        "fine-tuned %d/%d steps (%.2f epochs) in %.1fs, final loss %.4f%s",
        done,
        total,
        result.epochs,
        seconds,
        result.final_loss,
        " (stopped)" if stopped else "",
    )
    return result
