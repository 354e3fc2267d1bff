"""The job spec: what to prune, on which data, within which budget, searched how.

These pydantic models are the one description of a job shared by the CLI, the HTTP API
and the workers. Field descriptions and examples feed the OpenAPI page. The sections
live in :mod:`search.spec_settings` (pruning in :mod:`search.spec_pruning`),
``input_shape`` in :mod:`search.spec_shapes`, the names and bounds in
:mod:`search.spec_limits`; :class:`JobSpec` assembles them here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.names import (
    CRITERION_NAMES,
    DATASET_NAMES,
    RECURRENT_CRITERIA,
)
from search.spec_limits import (
    MAX_BUDGET_MACS,
    MAX_COMPUTE_EPOCHS,
    MAX_DATASET_CHARS,
    MAX_INPUT_CHANNELS,
    MAX_INPUT_FEATURES,
    MAX_INPUT_SIDE,
    MAX_NAME_CHARS,
    MAX_NUM_CLASSES,
    MAX_SEED,
    MAX_TIME_STEPS,
    MAX_TRIALS,
    OBJECTIVES,
    SAMPLERS,
    Objective,
)
from search.spec_pruning import PruningSettings
from search.spec_settings import (
    DEVICE_NAME_PATTERN,
    SPEC_CONFIG,
    Budget,
    FinetuneSettings,
    LatencySettings,
    SearchSettings,
    SpecSection,
)
from search.spec_shapes import SEQUENCE_DATASET_SUFFIX, Shape, arch_input_rank, rank_advice

__all__ = [
    "CRITERION_NAMES",
    "MAX_BUDGET_MACS",
    "MAX_COMPUTE_EPOCHS",
    "MAX_INPUT_CHANNELS",
    "MAX_INPUT_FEATURES",
    "MAX_INPUT_SIDE",
    "MAX_NUM_CLASSES",
    "MAX_SEED",
    "MAX_TIME_STEPS",
    "MAX_TRIALS",
    "OBJECTIVES",
    "Direction",
    "directions",
    "objective_names",
    "SAMPLERS",
    "Budget",
    "DEVICE_NAME_PATTERN",
    "FinetuneSettings",
    "JobSpec",
    "LatencySettings",
    "PruningSettings",
    "SearchSettings",
]


class JobSpec(SpecSection):
    """A pruning job: model, data, budget, objective and search settings."""

    model_config = ConfigDict(
        **SPEC_CONFIG,
        json_schema_extra={
            "examples": [
                {
                    "arch": "resnet20_cifar",
                    "num_classes": 10,
                    "input_shape": [3, 32, 32],
                    "dataset": "digits",
                    "budget": {"flops": 0.5},
                    "objective": "constrained",
                    "search": {"trials": 20, "sampler": "tpe", "seed": 0},
                    "finetune": {"epochs_per_trial": 1, "final_epochs": 3},
                }
            ]
        },
    )

    arch: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        examples=["resnet20_cifar"],
        description="Zoo architecture name. Required unless the model itself is given "
        "(an uploaded ONNX model, or `search.prune_module` from Python).",
    )
    num_classes: int | None = Field(
        None,
        ge=1,
        le=MAX_NUM_CLASSES,
        examples=[10],
        description=f"Classifier outputs (1 to {MAX_NUM_CLASSES:,}); the data set's number "
        "of classes if omitted.",
    )
    input_shape: Shape | None = Field(
        None,
        examples=[[3, 32, 32], [8, 8]],
        description=f"(C, H, W) for an image model: C from 1 to {MAX_INPUT_CHANNELS} "
        f"channels, H and W from 1 to {MAX_INPUT_SIDE} pixels; or (T, F) for a sequence "
        f"(recurrent) model: T from 1 to {MAX_TIME_STEPS:,} time steps of F from 1 to "
        f"{MAX_INPUT_FEATURES:,} features. The rank must be the architecture's "
        "(lstm_classifier reads [T, F]); the architecture's shape if omitted. A server "
        "also refuses a model whose memory at batch 1 at this shape is over its limit.",
    )
    dataset: str = Field(
        "digits",
        min_length=1,
        max_length=MAX_DATASET_CHARS,
        examples=["digits"],
        description=f"{', '.join(DATASET_NAMES)} (from the workers' data root), or `upload` "
        "for the uploaded file.",
    )
    budget: Budget = Field(default_factory=Budget)
    objective: Objective = Field(
        "constrained",
        description="constrained: best accuracy within the budget; pareto: accuracy vs "
        "MACs (and latency) trade-off; scalar: accuracy with a soft resource penalty.",
    )
    search: SearchSettings = Field(default_factory=SearchSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    pruning: PruningSettings = Field(default_factory=PruningSettings)
    latency: LatencySettings = Field(default_factory=LatencySettings)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str | None) -> str | None:
        from models.errors import UnknownArchitectureError
        from models.zoo import get_architecture

        if value is None:
            return None
        try:
            get_architecture(value)
        except UnknownArchitectureError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("input_shape")
    @classmethod
    def _rank_of_arch(
        cls, value: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        arch = info.data.get("arch")
        if value is None or arch is None:
            return value
        rank = arch_input_rank(arch)
        if len(value) != rank:
            raise ValueError(rank_advice(arch, rank, value))
        return value

    @model_validator(mode="after")
    def _dataset_feeds_rank(self) -> JobSpec:
        # a model validator: the default dataset (digits) must fit a sequence arch too
        if self.dataset not in DATASET_NAMES or (self.input_shape is None and self.arch is None):
            return self  # files and folders are checked when read: an .npz feeds both ranks
        rank = len(self.input_shape) if self.input_shape else arch_input_rank(str(self.arch))
        sequences = self.dataset.endswith(SEQUENCE_DATASET_SUFFIX)
        if sequences == (rank == 2):
            return self
        model = self.arch or f"a model of input_shape {list(self.input_shape or ())}"
        fitting = [n for n in DATASET_NAMES if n.endswith(SEQUENCE_DATASET_SUFFIX) != sequences]
        twin = (
            self.dataset.removesuffix(SEQUENCE_DATASET_SUFFIX)
            if sequences
            else self.dataset + SEQUENCE_DATASET_SUFFIX
        )
        fitting.sort(key=lambda name: name != twin)  # the same data read the other way first
        feeds, reads = ("sequences (T, F)", "images (C, H, W)")[:: 1 if sequences else -1]
        npz = "images" if sequences else "(N, T, F) sequences"
        raise ValueError(
            f"dataset {self.dataset} feeds {feeds} and {model} reads {reads}: use "
            f"{' or '.join(fitting[:2])}, or upload an .npz of {npz}"
        )

    @property
    def reads_sequences(self) -> bool | None:
        """True for a sequence model ((T, F) inputs), False for an image model, None when
        the spec does not say (a given model's rank is its own)."""
        if self.input_shape is not None:
            return len(self.input_shape) == 2
        return None if self.arch is None else arch_input_rank(self.arch) == 2

    @model_validator(mode="after")
    def _recurrent_pruning(self) -> JobSpec:
        steps = self.pruning.sequence or ()
        if self.reads_sequences is False and any(s.granularity == "weight" for s in steps):
            raise ValueError(
                "pruning.sequence: weight steps prune the input-to-hidden and "
                "hidden-to-hidden weights of LSTM/GRU layers, and an image model has none; "
                "use kernel steps (e.g. "
                '{"granularity": "kernel", "criterion": "l1", "amount": 0.5}) to zero '
                "weights of its convolutions"
            )
        if not self.reads_sequences:
            return self
        # the hidden units of LSTM/GRU layers are ranked by their weights: the data-driven
        # criteria hook convolution outputs, and dropnet ranks by mean activation
        known = ", ".join(RECURRENT_CRITERIA)
        for field, names in (
            ("pruning.criterion", (self.pruning.criterion,)),
            ("pruning.criteria", self.pruning.criteria),
        ):
            wrong = [name for name in names if name not in RECURRENT_CRITERIA]
            if wrong:
                raise ValueError(
                    f"{field}: {', '.join(wrong)} cannot rank the hidden units of a sequence "
                    f"model's LSTM/GRU layers; use {known}"
                )
        if self.pruning.schedule == "dropnet":
            raise ValueError(
                "pruning.schedule: dropnet ranks units by their mean activation, which "
                "cannot rank the hidden units of LSTM/GRU layers; use iterative (with "
                f"pruning.criterion {known}), agp or another schedule"
            )
        if any(s.granularity == "kernel" for s in steps):
            # refused rather than ignored: kernel steps would leave every weight in place
            raise ValueError(
                "pruning.sequence: kernel steps remove k×k kernels of convolutions, and a "
                "sequence model's LSTM/GRU layers have none (their hidden units are the "
                "searched widths); use weight steps (e.g. "
                '{"granularity": "weight", "criterion": "l1", "amount": 0.8}) to prune '
                "their weights by magnitude, or leave the sequence null"
            )
        return self

    @property
    def searches_depth(self) -> bool:
        """True when the search may remove residual blocks (``pruning.depth``, where null
        means: when nothing in the spec rules it out)."""
        if self.pruning.depth is not None:
            return self.pruning.depth
        return self.pruning.schedule == "one_shot" and self.pruning.sequence is None

    @property
    def distills(self) -> bool:
        """True when training distills the unpruned model (``finetune.distill``, where
        null means: with ``search.compute_epochs``)."""
        if self.finetune.distill is not None:
            return self.finetune.distill
        return self.search.compute_epochs is not None

    @model_validator(mode="after")
    def _table_needs_images(self) -> JobSpec:
        if self.latency.predictor == "table" and self.reads_sequences:
            raise ValueError(
                "latency.predictor: the layer latency table knows convolutions and linear "
                "layers, not LSTM/GRU layers; a sequence model's latency is measured: set "
                "latency.predictor to measure"
            )
        return self

    @model_validator(mode="after")
    def _objective_needs(self) -> JobSpec:
        if self.objective == "constrained" and self.budget.is_empty:
            raise ValueError(
                "a constrained job needs a budget: set budget.flops (e.g. 0.5), budget.macs, "
                "budget.params, budget.latency_ms or budget.max_accuracy_drop; or use "
                'objective "pareto" to see the whole trade-off'
            )
        if self.objective == "scalar" and not self.budget.has_resource_limit:
            raise ValueError(
                "a scalar job penalizes cost above a target: set budget.flops, budget.macs, "
                "budget.params or budget.latency_ms"
            )
        return self

    @model_validator(mode="after")
    def _schedule_needs(self) -> JobSpec:
        schedule = self.pruning.schedule
        if schedule == "one_shot":
            return self
        if self.search.compute_epochs is not None:
            raise ValueError(
                f"pruning.schedule {schedule}: with search.compute_epochs the delivered model "
                "trains on from a candidate that is already pruned; use one_shot, or leave "
                "search.compute_epochs out"
            )
        if self.finetune.final_epochs == 0:
            raise ValueError(
                f"pruning.schedule {schedule} prunes over the final fine-tune: set "
                "finetune.final_epochs above 0"
            )
        if schedule == "adaptive" and self.budget.max_accuracy_drop is None:
            raise ValueError(
                "pruning.schedule adaptive keeps validation accuracy within "
                "budget.max_accuracy_drop of the unpruned model's: set it (e.g. 0.01)"
            )
        return self

    @property
    def measures_latency(self) -> bool:
        """True if trials must measure latency (a latency limit, or latency set explicitly
        for a pareto job)."""
        return self.budget.latency_ms is not None or (
            self.objective == "pareto" and "latency" in self.model_fields_set
        )

    def fingerprint(self) -> str:
        """Return a short stable hash of what defines the search (names studies so that a
        rerun resumes them). The trial count, timeout and final fine-tune are left out:
        asking for more trials continues the same study. (With ``compute_epochs``,
        ``distill`` trains the candidates too, so it defines the search.)"""
        data = self.model_dump(mode="json")
        data["search"].pop("trials")
        data["search"].pop("timeout_s")
        data["finetune"].pop("final_epochs")
        for key in ("schedule", "schedule_steps", "criteria"):
            data["pruning"].pop(key)  # the final fine-tune's, not the search's
        if data["pruning"]["sequence"] is None:
            data["pruning"].pop("sequence")  # studies named before it existed resume
        if not data["finetune"]["amp"]:
            data["finetune"].pop("amp")  # studies named before it existed resume
        if data["search"]["compute_epochs"] is None:
            data["search"].pop("compute_epochs")  # studies named before it existed resume
            data["finetune"].pop("distill")  # then it changes only the final fine-tune
        else:
            data["finetune"]["distill"] = self.distills  # null and true: the same search
        for key in ("distill_weight", "distill_temperature"):
            default = FinetuneSettings.model_fields[key].default
            if not data["finetune"].get("distill") or data["finetune"][key] == default:
                data["finetune"].pop(key)  # studies named before they existed resume
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def study_name(self) -> str:
        """Return the default Optuna study name for this spec."""
        return f"inferprune-{self.arch or 'model'}-{self.fingerprint()}"

    def to_json_dict(self) -> dict[str, Any]:
        """Return the spec as plain JSON data (``search.trials`` left out when
        ``compute_epochs`` decides it, so that the data validate to the same job)."""
        data = self.model_dump(mode="json")
        if self.search.compute_epochs is not None and "trials" not in self.search.model_fields_set:
            data["search"].pop("trials")
        return data


Direction = Literal["minimize", "maximize"]


def directions(spec: JobSpec) -> list[Direction]:
    """Return the Optuna directions of the spec's objective(s)."""
    if spec.objective == "pareto":
        dirs: list[Direction] = ["maximize", "minimize"]
        if spec.measures_latency:
            dirs.append("minimize")
        return dirs
    if spec.objective == "constrained" and not spec.budget.has_resource_limit:
        return ["minimize"]  # only an accuracy floor: the smallest model within it
    return ["maximize"]


def objective_names(spec: JobSpec) -> list[str]:
    """Return human names of the objective values, in order."""
    if spec.objective == "pareto":
        names = ["val_accuracy", "macs_ratio"]
        return names + ["latency_ms"] if spec.measures_latency else names
    if spec.objective == "constrained" and not spec.budget.has_resource_limit:
        return ["macs_ratio"]
    return ["score"] if spec.objective == "scalar" else ["val_accuracy"]
