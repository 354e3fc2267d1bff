"""Fine-tuning and evaluation of classifiers, and BatchNorm recalibration after pruning.

:func:`fine_tune` trains a model in place (SGD with momentum, cosine learning rate,
optional distillation from a teacher such as the unpruned model, or from its logits on
the training split computed once: :class:`SoftTargets`) and raises
:class:`~models.errors.TrainingDivergedError` when the loss diverges.
:func:`evaluate` gives top-1 / top-5 accuracy and mean loss. :func:`recalibrate_batchnorm`
re-estimates BatchNorm statistics after pruning (adaptive BN, as in EagleEye), a cheap
step that makes a pruned candidate's accuracy meaningful before any fine-tuning.

Every function takes a :class:`~models.data.BatchSource`, runs on the device the
model's parameters are on, and leaves the model in eval mode.
"""

from __future__ import annotations

from models.train._batchnorm import recalibrate_batchnorm, stale_statistics_share
from models.train._carry import OptimizerCarry
from models.train._evaluate import Evaluation, evaluate
from models.train._finetune import TrainProgress, TrainResult, fine_tune
from models.train._schedule import steps_per_epoch, total_steps
from models.train._soft_targets import MAX_SOFT_TARGET_BYTES, SoftTargets

__all__ = [
    "MAX_SOFT_TARGET_BYTES",
    "Evaluation",
    "OptimizerCarry",
    "SoftTargets",
    "TrainProgress",
    "TrainResult",
    "evaluate",
    "fine_tune",
    "recalibrate_batchnorm",
    "stale_statistics_share",
    "steps_per_epoch",
    "total_steps",
]
