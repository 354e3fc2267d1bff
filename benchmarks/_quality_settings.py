"""search_quality.py's methods and the recipe every method shares (:class:`Settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search import JobSpec
from search.spec import FinetuneSettings

ARCH = "resnet20_cifar"
DISTILL_WEIGHT = float(FinetuneSettings.model_fields["distill_weight"].default)
DISTILL_TEMPERATURE = float(FinetuneSettings.model_fields["distill_temperature"].default)
"""The product's distillation loss (``--distill-weight``, ``--distill-temperature``)."""
DATASET = "digits"
INPUT_SHAPE = (3, 32, 32)
SEARCH_METHODS = ("tpe", "gp", "random", "tpe_widths", "tpe_plain")
SAMPLERS = {"tpe": "tpe", "gp": "gp", "random": "random", "tpe_widths": "tpe", "tpe_plain": "tpe"}
"""Each search method's Optuna sampler; ``tpe_widths`` is the product's search with
``pruning.depth`` false (widths only: the search as it was before it removed blocks),
``tpe_plain`` the product's search with ``finetune.distill`` false (labels only: the
search as it was before it distilled by default)."""
WIDTHS_ONLY = ("tpe_widths",)
ONE_SHOT_METHODS = ("uniform", "global", "sensitivity", "fastnas", "depth", "uniform_distilled")
"""``depth`` is the search's own half-depth reference (half of each stage's removable
blocks removed, uniform widths at the budget) trained alone: like ``sensitivity``, one
of the product's plans, and a baseline the search must beat. ``uniform_distilled`` is
not a baseline but an ablation: the uniform plan trained with the distillation the
search has, to show how much of the search's lead is the distillation."""
DISTILLS = {"tpe_plain": False, "uniform_distilled": True}
"""Methods whose distillation is fixed. Otherwise (unless ``--distill`` or
``--no-distill`` sets it for every method) a search distills as the product does by
default (``finetune.distill`` null: with ``compute_epochs``), and a one-shot method and
the yardstick train on labels only, as the one-liners they stand for do."""
YARDSTICK = "unpruned"
"""Not a pruning method: the unpruned baseline trained on with the same compute and
recipe as every method (a 15-epoch baseline under-states what the architecture reaches,
so the goal's margin is judged against the better of the two; see ``_summary``)."""
METHODS = SEARCH_METHODS + ONE_SHOT_METHODS + (YARDSTICK,)
DEFAULT_METHODS = ("tpe", "gp", "random", "uniform", "global")
"""``fastnas`` needs the ``bench`` extra (NVIDIA ModelOpt): ask for it by name."""
EQUAL_COMPUTE = "+ec"
"""Suffix of a one-shot method run with the search's trial training added to its final
fine-tune (``uniform+ec``)."""
STEP0_PRUNER = "Optuna's median pruner on the BN-recalibrated accuracy"
"""How trials were pruned before the halfway check (reports written without a pruner)."""
PRUNER = (
    "Optuna's median pruner on the BN-recalibrated accuracy, consulted only when that "
    "accuracy is above chance (more than two val images above a guess)"
)
"""How ``search.objective.run_trial`` prunes single-objective trials now."""
NOTES_MARKER = (
    "<!-- Findings below are written by hand; search_quality.py keeps them when it reruns. -->"
)


@dataclass(frozen=True)
class Settings:
    """Hyperparameters shared by every method (only the width choice differs)."""

    trials: int
    epochs_per_trial: float
    final_epochs: float
    lr: float
    batch_size: int
    criterion: str
    round_to: int
    base_epochs: int
    dataset: str = DATASET
    input_shape: tuple[int, int, int] = INPUT_SHAPE
    data_root: str | None = None
    arch: str = ARCH
    compute_epochs: float | None = None
    distill: bool | None = None
    distill_weight: float = DISTILL_WEIGHT
    distill_temperature: float = DISTILL_TEMPERATURE
    device: str = "cpu"

    def distills(self, method: str) -> bool | None:
        """Return ``finetune.distill`` for ``method``: ``--distill`` / ``--no-distill``
        where given, else :data:`DISTILLS`, else null (the product's default) for a
        search and false for the others."""
        if self.distill is not None:
            return self.distill
        name = method.removesuffix(EQUAL_COMPUTE)
        if name in DISTILLS:
            return DISTILLS[name]
        return None if name in SEARCH_METHODS else False

    def spec(
        self,
        budget: float,
        seed: int,
        sampler: str,
        final_epochs: float,
        depth: bool | None = None,
        distill: bool | None = None,
    ) -> JobSpec:
        """Return the job spec of one run (with ``compute_epochs`` the search decides its
        trials, and the one-shot methods get the whole compute as ``final_epochs``;
        ``depth`` is ``pruning.depth`` and ``distill`` ``finetune.distill``, None: the
        product's default)."""
        search: dict[str, Any] = {"trials": self.trials, "sampler": sampler, "seed": seed}
        if self.compute_epochs is not None:
            search = {"compute_epochs": self.compute_epochs, "sampler": sampler, "seed": seed}
            final_epochs = self.compute_epochs
        return JobSpec.model_validate(
            {
                "arch": self.arch,
                "input_shape": list(self.input_shape),
                "dataset": self.dataset,
                "budget": {"flops": budget},
                "objective": "constrained",
                "search": search,
                "finetune": {
                    "epochs_per_trial": self.epochs_per_trial,
                    "final_epochs": final_epochs,
                    "lr": self.lr,
                    "batch_size": self.batch_size,
                    "distill": distill,
                    "distill_weight": self.distill_weight,
                    "distill_temperature": self.distill_temperature,
                },
                "pruning": {
                    "criterion": self.criterion,
                    "round_to": self.round_to,
                    "depth": depth,
                },
                "latency": {"backend": "onnxruntime", "threads": 1, "batch_size": 1},
            }
        )
