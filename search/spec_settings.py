"""The sections of a job spec: budget, search, fine-tune and latency settings (assembled by
:class:`search.spec.JobSpec`; the pruning settings are :mod:`search.spec_pruning`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from search.spec_limits import (
    MAX_BUDGET_MACS,
    MAX_COMPUTE_EPOCHS,
    MAX_LATENCY_MS,
    MAX_PARAMS,
    MAX_SEED,
    MAX_STEPS_PER_TRIAL,
    MAX_TIMEOUT_S,
    MAX_TRIALS,
    Sampler,
)

__all__ = [
    "Budget",
    "DEVICE_NAME_PATTERN",
    "FinetuneSettings",
    "LatencyPredictor",
    "LatencySettings",
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
