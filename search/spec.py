"""The job spec: what to prune, on which data, within which budget, searched how.

These pydantic models are the one description of a job shared by the CLI, the HTTP API
and the workers. Field descriptions and examples feed the OpenAPI page.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from models.names import (
    CRITERION_NAMES,
    DATASET_NAMES,
    RECURRENT_CRITERIA,
    CriterionName,
    ScheduleName,
)
from search.steps import MAX_SEQUENCE_STEPS, PruningStepSpec

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

Sampler = Literal["tpe", "gp", "nsga2", "random", "qmc"]
Objective = Literal["constrained", "pareto", "scalar"]
Criterion = CriterionName
"""The criteria of :mod:`models.criteria`, from the torch-free :mod:`models.names`."""

SAMPLERS: tuple[str, ...] = get_args(Sampler)
OBJECTIVES: tuple[str, ...] = get_args(Objective)

# Every number of the spec is bounded: what lies outside could only fail later, in a
# worker (numpy seeds are 32-bit) or in the API process (a huge input is built to be
# validated). The bounds sit far beyond any real use.
MAX_TRIALS = 10_000
MAX_SEED = 2**31 - 1
"""Largest seed: numpy, scikit-learn and Optuna's samplers take 32-bit seeds."""
MAX_INPUT_CHANNELS = 64
"""Largest number of input channels (RGB is 3; multispectral stacks stay far below)."""
MAX_INPUT_SIDE = 2048
"""Largest input height and width in pixels (ImageNet models use 224 to 600)."""
MAX_TIME_STEPS = 100_000
"""Largest number of time steps T of a sequence input (T, F)."""
MAX_INPUT_FEATURES = 4096
"""Largest number of features F per time step of a sequence input (T, F)."""
MAX_NUM_CLASSES = 100_000
MAX_BUDGET_MACS = 10**15
MAX_PARAMS = 1e12
MAX_LATENCY_MS = 3_600_000.0
MAX_TIMEOUT_S = 30 * 24 * 3600.0
MAX_STEPS_PER_TRIAL = 1_000_000
MAX_COMPUTE_EPOCHS = 100_000.0
MAX_NAME_CHARS = 100
MAX_DATASET_CHARS = 1024
MAX_IGNORED_LAYERS = 1024
MAX_LAYER_NAME_CHARS = 256
MAX_SCHEDULE_STEPS = 1000

_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Strict(BaseModel):
    model_config = _CONFIG


class Budget(_Strict):
    """Resource limits the pruned model must meet, and the accuracy it may lose.

    Every limit is optional; ``constrained`` and ``scalar`` jobs need at least one.
    """

    flops: float | None = Field(
        None,
        gt=0,
        le=1,
        examples=[0.5],
        description="Keep at most this fraction of the original model's MACs "
        "(multiply-accumulates at batch 1, often called FLOPs). 0.5 halves the compute.",
    )
    macs: int | None = Field(
        None,
        gt=0,
        le=MAX_BUDGET_MACS,
        examples=[20_000_000],
        description="Absolute MACs limit at batch 1 (at most 10^15); combined with `flops`, "
        "the smaller wins.",
    )
    params: float | None = Field(
        None,
        gt=0,
        le=MAX_PARAMS,
        examples=[0.5],
        description="Parameter limit: a fraction of the original's if <= 1, else a count "
        "(at most 10^12).",
    )
    latency_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_LATENCY_MS,
        examples=[2.5],
        description="Median latency limit in milliseconds (at most one hour), measured "
        "with the `latency` settings on `latency.target` (a registered device; null: the "
        "worker's own machine).",
    )
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        lt=1,
        examples=[0.01],
        description="Largest allowed drop of validation top-1 accuracy (a fraction: 0.01 is "
        "one point). Alone, it asks for the smallest model within that drop.",
    )

    @property
    def has_resource_limit(self) -> bool:
        """True if any of MACs, parameters or latency is limited."""
        return any(v is not None for v in (self.flops, self.macs, self.params, self.latency_ms))

    @property
    def is_empty(self) -> bool:
        """True if nothing at all is limited."""
        return not self.has_resource_limit and self.max_accuracy_drop is None


class SearchSettings(_Strict):
    """How the Optuna study searches."""

    trials: int = Field(
        20,
        ge=1,
        le=MAX_TRIALS,
        description=f"Number of candidate plans to evaluate (1 to {MAX_TRIALS:,}; a server "
        "may allow fewer).",
    )
    sampler: Sampler = Field(
        "tpe",
        description="tpe (default, Bayesian, handles constraints), gp (Gaussian-process "
        "Bayesian optimization), nsga2 (evolutionary, good for pareto), random, qmc "
        "(Sobol quasi-random).",
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description=f"Seeds the sampler, the split and the training (0 to {MAX_SEED:,}).",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Stop starting new trials after this many seconds (at most 30 days).",
    )
    compute_epochs: float | None = Field(
        None,
        gt=0,
        le=MAX_COMPUTE_EPOCHS,
        examples=[20],
        description="Total training the job may spend, trials and final fine-tune "
        "together, in epochs of the training split. With it the search decides how many "
        "candidates get how much (successive halving: promoted candidates continue from "
        "their own weights, and the last survivor is trained on into the delivered model); "
        "`trials` then counts the candidates only when set explicitly, and "
        "`finetune.epochs_per_trial`, `steps_per_trial` and `final_epochs` are not used.",
    )


class FinetuneSettings(_Strict):
    """Training of each candidate, and of the chosen one."""

    epochs_per_trial: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="Fine-tuning epochs per trial (fractions allowed; 0 = BatchNorm "
        "recalibration only).",
    )
    steps_per_trial: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS_PER_TRIAL,
        description="Fine-tune each trial this many steps instead of epochs (at most "
        f"{MAX_STEPS_PER_TRIAL:,}).",
    )
    final_epochs: float = Field(
        3.0, ge=0, le=10_000, description="Fine-tuning epochs of the chosen plan."
    )
    lr: float = Field(0.01, gt=0, le=10, description="Initial learning rate (cosine decay).")
    batch_size: int = Field(64, ge=1, le=4096, description="Samples per training step.")
    distill: bool = Field(
        False,
        description="Distill the unpruned model into the chosen one when finalizing; with "
        "`search.compute_epochs`, into every candidate's rungs too (the delivered model's "
        "training is one run from its first rung to the end).",
    )
    amp: bool = Field(
        False,
        description="Mixed precision on workers that train on a CUDA GPU: bfloat16 where "
        "the GPU supports it, else float16 with loss scaling. Workers on a CPU or MPS "
        "device train in float32 whatever this says.",
    )


LayerName = Annotated[str, Field(min_length=1, max_length=MAX_LAYER_NAME_CHARS)]


class PruningSettings(_Strict):
    """How a plan becomes a pruned model."""

    criterion: Criterion = Field("l1", description="Which channels of a group go first.")
    round_to: int = Field(
        8,
        ge=1,
        le=256,
        description="Kept channels are multiples of this unless a layer is narrower.",
    )
    ignored_layers: tuple[LayerName, ...] = Field(
        (),
        max_length=MAX_IGNORED_LAYERS,
        description="Module paths whose output channels are never pruned (at most "
        f"{MAX_IGNORED_LAYERS:,}).",
    )
    schedule: ScheduleName = Field(
        "one_shot",
        description="How the chosen plan is reached over the final fine-tune (the search's "
        "trials always prune at once): one_shot (prune, then fine-tune), iterative (prune "
        "a share, fine-tune, repeat; `criteria` may switch between rounds), dropnet "
        "(iterative, lowest mean post-activation first), agp (Zhu & Gupta's cubic "
        "schedule), one_cycle (one-cycle pruning from the first step to the last), "
        "while_training (cuts during training, none retrained apart), adaptive (the rate "
        "follows validation accuracy within budget.max_accuracy_drop). Every schedule ends "
        "at the plan's widths exactly.",
    )
    schedule_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_SCHEDULE_STEPS,
        description="Pruning steps of the schedule (null: its default: iterative 3 or one "
        "per criterion, dropnet 5, the others 10; one_cycle and adaptive need at least 2); "
        "not for one_shot.",
    )
    criteria: tuple[Criterion, ...] = Field(
        (),
        max_length=MAX_SCHEDULE_STEPS,
        examples=[["taylor", "fpgm"]],
        description="The iterative schedule's criteria, its rounds split between them in "
        "order (taylor then fpgm: saliency first, then similarity); empty: `criterion` "
        "throughout. The search's trials use `criterion`.",
    )
    sequence: tuple[PruningStepSpec, ...] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SEQUENCE_STEPS,
        examples=[
            [
                {"granularity": "channel", "criterion": "l1", "amount": 0.3},
                {"granularity": "kernel", "criterion": "fpgm", "amount": 0.5},
            ]
        ],
        description="Hybrid pruning: ordered steps, each removing a share (`amount`) of "
        "what is left at one granularity (channel or kernel) by one criterion; given "
        "widths (a plan) stand for the channel steps. Kernel pruning zeroes k×k kernels: reports "
        "give non-zero parameters and effective MACs beside the dense ones, which (with "
        "latency) stay as they are on dense runtimes unless a whole channel goes. Not "
        f"with a schedule other than one_shot; at most {MAX_SEQUENCE_STEPS} steps. "
        "In a search the searched widths are the channel step (channel steps, if given, "
        "come first and rank by `criterion`; their amounts are the search's to choose) "
        "and the kernel steps prune every candidate after it; budgets hold the dense "
        "MACs and parameters.",
    )

    @model_validator(mode="after")
    def _schedule_settings(self) -> PruningSettings:
        if self.schedule == "one_shot" and self.schedule_steps is not None:
            raise ValueError(
                "pruning.schedule_steps: one_shot prunes once; pick a schedule that prunes "
                "several times (e.g. iterative) or leave the steps out"
            )
        if self.criteria and self.schedule != "iterative":
            raise ValueError(
                "pruning.criteria: one criterion per round belongs to the iterative schedule; "
                f"{self.schedule} uses pruning.criterion"
            )
        if self.schedule in ("one_cycle", "adaptive") and self.schedule_steps == 1:
            raise ValueError(
                f"pruning.schedule_steps: {self.schedule} needs at least 2 steps (a start "
                "and an end)"
            )
        if self.schedule_steps is not None and len(self.criteria) > self.schedule_steps:
            raise ValueError(
                f"pruning.schedule_steps: {len(self.criteria)} criteria need at least "
                f"{len(self.criteria)} steps"
            )
        return self

    @model_validator(mode="after")
    def _sequence_prunes_at_once(self) -> PruningSettings:
        if self.sequence is not None and self.schedule != "one_shot":
            raise ValueError(
                f"pruning.sequence: a sequence prunes at once; it cannot follow the "
                f"{self.schedule} schedule (use schedule one_shot, or no sequence)"
            )
        if self.sequence is None:
            return self
        # in a search the searched widths are the channel step: it comes first, ranked by
        # pruning.criterion, and the kernel steps follow each candidate
        kinds = [step.granularity for step in self.sequence]
        if "kernel" not in kinds:
            raise ValueError(
                "pruning.sequence: a search chooses the channel widths itself, so a "
                "sequence of channel steps alone adds nothing; add a kernel step (e.g. "
                '{"granularity": "kernel", "criterion": "l1", "amount": 0.5}) or leave '
                "the sequence null"
            )
        if "channel" in kinds[kinds.index("kernel") :]:
            raise ValueError(
                "pruning.sequence: in a search the searched widths are the channel step "
                "and come first; put channel steps before the kernel steps, or prune one "
                "model in that order with `inferprune apply --sequence FILE`"
            )
        for number, step in enumerate(self.sequence, 1):
            if step.granularity == "channel" and step.criterion != self.criterion:
                raise ValueError(
                    f"pruning.sequence: step {number} ranks channels by {step.criterion}, "
                    "but in a search the searched widths are the channel step, ranked by "
                    f"pruning.criterion ({self.criterion}); set pruning.criterion to "
                    f"{step.criterion} or drop the step"
                )
        return self


DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A registered target device's name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``."""

LatencyPredictor = Literal["measure", "table"]


class LatencySettings(_Strict):
    """How and where latency is measured."""

    backend: Literal["onnxruntime", "torch"] = Field("onnxruntime", description="Runtime to time.")
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads.")
    batch_size: int = Field(1, ge=1, le=1024, description="Inputs per forward pass.")
    warmup: int = Field(5, ge=0, le=1000, description="Untimed runs first.")
    repeats: int = Field(30, ge=3, le=10_000, description="Timed runs (median and p10/p90).")
    target: str | None = Field(
        None,
        pattern=DEVICE_NAME_PATTERN,
        examples=["pi4"],
        description="Where latency is measured: the name of a device of your tenant that "
        "runs `inferprune agent --device NAME` (see `GET /v1/devices`); null: the "
        "worker's own machine. A device agent runs onnxruntime only.",
    )
    predictor: LatencyPredictor = Field(
        "measure",
        description="measure: time every candidate end to end. table: predict candidates "
        "from a per-device table of layer latencies (measured once per model and device, "
        "calibrated by a few end-to-end runs), project sampled plans onto the latency "
        "budget with it, and measure end to end only the Pareto front and the delivered "
        "model.",
    )

    @model_validator(mode="after")
    def _agents_run_onnxruntime(self) -> LatencySettings:
        if self.target is not None and self.backend != "onnxruntime":
            raise ValueError(
                "latency.target: a device agent times models with onnxruntime; set "
                "latency.backend to onnxruntime"
            )
        if self.predictor == "table" and self.backend != "onnxruntime":
            raise ValueError(
                "latency.predictor: the layer table is built with onnxruntime; set "
                "latency.backend to onnxruntime"
            )
        return self


Channels = Annotated[int, Field(ge=1, le=MAX_INPUT_CHANNELS)]
Side = Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]
Steps = Annotated[int, Field(ge=1, le=MAX_TIME_STEPS)]
Features = Annotated[int, Field(ge=1, le=MAX_INPUT_FEATURES)]
_SHAPES: dict[int, TypeAdapter[tuple[int, ...]]] = {
    3: TypeAdapter(tuple[Channels, Side, Side]),
    2: TypeAdapter(tuple[Steps, Features]),
}
"""The input shape of each rank, with its limits: (C, H, W) images, (T, F) sequences."""


def _input_shape(value: Any) -> tuple[int, ...]:
    """Return an ``input_shape`` as (C, H, W) or (T, F) within the limits, or raise.

    The rank picks the shape's type, so that a wrong size is reported at its place
    (``input_shape.1``), and a wrong rank as one message saying what to type, rather
    than pydantic's errors for each alternative of a union.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError("give a list of integers: [C, H, W] for images, [T, F] for sequences")
    if len(value) not in _SHAPES:
        raise ValueError(
            f"has {len(value)} numbers; give [C, H, W] for an image model (e.g. [3, 32, 32]) "
            "or [T, F] for a sequence model (e.g. [8, 8])"
        )
    return _SHAPES[len(value)].validate_python(value)


def _dims(*limits: int) -> dict[str, Any]:
    sizes = [{"type": "integer", "minimum": 1, "maximum": limit} for limit in limits]
    return {"type": "array", "prefixItems": sizes, "minItems": len(sizes), "maxItems": len(sizes)}


Shape = Annotated[
    tuple[int, ...],
    BeforeValidator(_input_shape),
    WithJsonSchema(
        {
            "anyOf": [
                _dims(MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, MAX_INPUT_SIDE),
                _dims(MAX_TIME_STEPS, MAX_INPUT_FEATURES),
            ],
            "description": "(C, H, W) of one image, or (T, F) of one sequence.",
        }
    ),
]


SEQUENCE_DATASET_SUFFIX = "_seq"
"""Built-in data sets named with this suffix feed sequences (T, F); the others images."""


def _arch_input_rank(arch: str) -> int:
    """Return the input rank of a zoo architecture (imported here: the spec module loads
    without torch, and only validating an ``arch`` needs the zoo)."""
    from models.zoo import get_architecture

    return get_architecture(arch).input_rank


def _rank_advice(arch: str, rank: int, shape: tuple[int, ...]) -> str:
    """Return what to type when ``shape`` has not the rank ``arch`` reads."""
    from models.zoo import get_architecture

    default = list(get_architecture(arch).default_input_shape)
    if rank == 2:
        return (
            f"{arch} reads sequences: give input_shape [T, F] (time steps, features) such "
            f"as {default}, not {list(shape)}"
        )
    return f"{arch} reads images: give input_shape [C, H, W] such as {default}, not {list(shape)}"


class JobSpec(_Strict):
    """A pruning job: model, data, budget, objective and search settings."""

    model_config = ConfigDict(
        **_CONFIG,
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
        rank = _arch_input_rank(arch)
        if len(value) != rank:
            raise ValueError(_rank_advice(arch, rank, value))
        return value

    @model_validator(mode="after")
    def _dataset_feeds_rank(self) -> JobSpec:
        # a model validator: the default dataset (digits) must fit a sequence arch too
        if self.dataset not in DATASET_NAMES or (self.input_shape is None and self.arch is None):
            return self  # files and folders are checked when read: an .npz feeds both ranks
        rank = len(self.input_shape) if self.input_shape else _arch_input_rank(str(self.arch))
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
        return None if self.arch is None else _arch_input_rank(self.arch) == 2

    @model_validator(mode="after")
    def _recurrent_pruning(self) -> JobSpec:
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
        if self.pruning.sequence is not None:
            # refused rather than ignored: kernel steps would leave every weight in place
            raise ValueError(
                "pruning.sequence: kernel steps remove k×k kernels of convolutions, and a "
                "sequence model's LSTM/GRU layers have none (their hidden units are the "
                "searched widths); leave the sequence null"
            )
        return self

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
