"""The sections of a job spec: budget, search, fine-tune, pruning and latency settings
(assembled by :class:`search.spec.JobSpec`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from models.names import (
    ScheduleName,
)
from search.spec_limits import (
    MAX_BUDGET_MACS,
    MAX_COMPUTE_EPOCHS,
    MAX_IGNORED_LAYERS,
    MAX_LATENCY_MS,
    MAX_LAYER_NAME_CHARS,
    MAX_PARAMS,
    MAX_SCHEDULE_STEPS,
    MAX_SEED,
    MAX_STEPS_PER_TRIAL,
    MAX_TIMEOUT_S,
    MAX_TRIALS,
    Criterion,
    Sampler,
)
from search.steps import MAX_SEQUENCE_STEPS, PruningStepSpec

__all__ = [
    "Budget",
    "DEVICE_NAME_PATTERN",
    "FinetuneSettings",
    "LatencyPredictor",
    "LatencySettings",
    "LayerName",
    "PruningSettings",
    "SPEC_CONFIG",
    "SearchSettings",
    "SpecSection",
]

SPEC_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpecSection(BaseModel):
    """A section of the spec: unknown keys are refused, values frozen, no NaN or inf."""

    model_config = SPEC_CONFIG


class Budget(SpecSection):
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


class SearchSettings(SpecSection):
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


class FinetuneSettings(SpecSection):
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
    distill: bool | None = Field(
        None,
        description="Distill the unpruned model into the chosen one when finalizing; with "
        "`search.compute_epochs`, into every candidate's rungs too (the delivered model's "
        "training is one run from its first rung to the end). null (the default): on with "
        "`search.compute_epochs`, off without. The unpruned model's logits on the "
        "training split are computed once per job and worker (one forward pass) and "
        "reused by every candidate, so distilling costs about that one pass, not a "
        "teacher pass per step (splits too large to hold them fall back to the latter).",
    )
    distill_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the distillation term in the loss when distilling "
        "(`(1 - w) · cross-entropy + w · T² · KL(teacher ‖ student)`); 0 trains on labels "
        "only, 1 on the teacher's soft targets only.",
    )
    distill_temperature: float = Field(
        4.0,
        gt=0,
        le=100,
        description="Softening temperature T of both models' outputs in the "
        "distillation term (Hinton et al.): higher spreads the teacher's probability over "
        "more classes.",
    )
    amp: bool = Field(
        False,
        description="Mixed precision on workers that train on a CUDA GPU: bfloat16 where "
        "the GPU supports it, else float16 with loss scaling. Workers on a CPU or MPS "
        "device train in float32 whatever this says.",
    )


LayerName = Annotated[str, Field(min_length=1, max_length=MAX_LAYER_NAME_CHARS)]


class PruningSettings(SpecSection):
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
        "schedule), one_cycle (one-cycle pruning along its curve), while_training (soft "
        "filter pruning: the plan's worth zeroed at intervals while training goes on, cut "
        "at the end), adaptive (the rate follows validation accuracy within "
        "budget.max_accuracy_drop). The gradual ones cut within the first half of the "
        "fine-tune and train the rest at the plan's widths; every schedule ends at the "
        "plan's widths exactly.",
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
        "what is left at one granularity (channel, kernel or weight) by one criterion; "
        "given widths (a plan) stand for the channel steps. Kernel pruning (convolutional "
        "models) zeroes k×k kernels; weight pruning (recurrent models) zeroes the "
        "smallest LSTM/GRU input-to-hidden and hidden-to-hidden weights until each matrix "
        "has `amount` zeros (AGP: gradual over the first half of a following fine-tune, "
        "at once without one). Reports give non-zero parameters and effective MACs beside "
        "the dense ones, which (with latency) stay as they are on dense runtimes unless a "
        "whole channel goes; zeros are kept through every later training. Not with a "
        f"schedule other than one_shot; at most {MAX_SEQUENCE_STEPS} steps. In a search "
        "the searched widths (channels or hidden units) are the channel step (channel "
        "steps, if given, come first and rank by `criterion`; their amounts are the "
        "search's to choose) and the kernel or weight steps prune every candidate after "
        "it, at once (weight steps too: trials are short); budgets hold the dense MACs "
        "and parameters.",
    )

    depth: bool | None = Field(
        None,
        description="Whether the search may also remove residual blocks whole (depth): "
        "per stage, how many of its removable blocks go is searched beside the widths "
        "(blocks whose branch, zeroed, leaves the shortcut: ResNet basic blocks, "
        "MobileNetV2's inverted residuals with a shortcut). null: yes for a one_shot "
        "schedule without a sequence, no otherwise (gradual schedules and kernel steps "
        "know widths only); true with one of those is refused; false: widths only.",
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
    def _depth_needs_one_shot(self) -> PruningSettings:
        if self.depth and self.schedule != "one_shot":
            raise ValueError(
                f"pruning.depth: the {self.schedule} schedule reaches widths gradually and "
                "cannot remove blocks; use schedule one_shot, or set depth to false"
            )
        if self.depth and self.sequence is not None:
            raise ValueError(
                "pruning.depth: a hybrid sequence prunes widths and kernels, not blocks; "
                "leave the sequence out, or set depth to false"
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
        # pruning.criterion, and the kernel or weight steps follow each candidate
        kinds = [step.granularity for step in self.sequence]
        sparse = [k != "channel" for k in kinds]
        if not any(sparse):
            raise ValueError(
                "pruning.sequence: a search chooses the channel widths itself, so a "
                "sequence of channel steps alone adds nothing; add a kernel step for a "
                'convolutional model (e.g. {"granularity": "kernel", "criterion": "l1", '
                '"amount": 0.5}) or a weight step for a recurrent one (e.g. '
                '{"granularity": "weight", "criterion": "l1", "amount": 0.8}), or leave '
                "the sequence null"
            )
        if "channel" in kinds[sparse.index(True) :]:
            raise ValueError(
                "pruning.sequence: in a search the searched widths are the channel step "
                "and come first; put channel steps before the kernel steps and weight "
                "steps, or prune one model in that order with `inferprune apply "
                "--sequence FILE`"
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


class LatencySettings(SpecSection):
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
