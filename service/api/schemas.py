"""What crosses the wire: request and response bodies of the REST API (not the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.store import JobStatus  # the one enum of job statuses, re-exported for the wire

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "JobLinks",
    "JobList",
    "JobPublic",
    "JobStatus",
    "ParetoPointPublic",
    "ParetoPublic",
    "Progress",
    "TrialList",
    "TrialPublic",
]


class ErrorDetail(BaseModel):
    """A machine-readable code and a message a person can act on."""

    code: str = Field(
        ..., examples=["invalid_spec"], description="Stable machine-readable error code."
    )
    message: str = Field(
        ...,
        examples=["search.trials: Input should be greater than 0"],
        description="What went wrong and what to do about it.",
    )


class ErrorBody(BaseModel):
    """Every error response of the API."""

    error: ErrorDetail


class Progress(BaseModel):
    """How far the search is."""

    trials_done: int = Field(..., examples=[7], description="Completed or pruned trials.")
    trials_total: int = Field(
        ...,
        examples=[20],
        description="Trials the job runs: `search.trials`; with `search.compute_epochs`, "
        "its candidates plus the continuations of paused candidates queued so far (it "
        "grows while the search runs).",
    )
    fraction: float = Field(
        ...,
        ge=0,
        le=1,
        examples=[0.35],
        description="Share of the whole job done, finalization included.",
    )
    eta_s: float | None = Field(
        None, examples=[84.0], description="Estimated seconds left, from the trials so far."
    )
    trials_running: int = Field(0, examples=[2], description="Trials being evaluated now.")
    trials_failed: int = Field(0, examples=[0], description="Trial attempts that failed.")


class JobLinks(BaseModel):
    """Where to find the job's parts."""

    self: str = Field(..., examples=["/v1/jobs/9b1d..."], description="This job.")
    trials: str = Field(..., examples=["/v1/jobs/9b1d.../trials"], description="Its trials.")
    pareto: str = Field(
        ..., examples=["/v1/jobs/9b1d.../pareto"], description="Its Pareto front as JSON."
    )
    pareto_png: str = Field(
        ..., examples=["/v1/jobs/9b1d.../pareto.png"], description="Its Pareto front as a plot."
    )
    checkpoint: str = Field(
        ...,
        examples=["/v1/jobs/9b1d.../checkpoint"],
        description="Download the chosen model (add ?trial=&format=).",
    )
    events: str = Field(
        ..., examples=["/v1/jobs/9b1d.../events"], description="Server-sent progress events."
    )


class JobPublic(BaseModel):
    """A pruning job as the API shows it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9b1d2c0e4f6a4b8f9d0c1e2f3a4b5c6d",
                    "status": "running",
                    "spec": {
                        "arch": "resnet20_cifar",
                        "dataset": "digits",
                        "budget": {"flops": 0.5},
                    },
                    "progress": {
                        "trials_done": 7,
                        "trials_total": 20,
                        "fraction": 0.33,
                        "eta_s": 84.0,
                    },
                    "baseline": {"macs": 41218688, "params": 272474, "val_accuracy": 0.94},
                    "best": None,
                    "error": None,
                    "created_at": "2026-11-21T12:00:00Z",
                    "started_at": "2026-11-21T12:00:02Z",
                    "finished_at": None,
                }
            ]
        }
    )

    id: str = Field(..., description="Job id.")
    status: JobStatus = Field(
        ..., description="queued, running, finalizing, succeeded, failed or cancelled."
    )
    spec: dict[str, Any] = Field(..., description="The job spec as accepted (defaults filled).")
    progress: Progress
    baseline: dict[str, Any] | None = Field(
        None,
        description="The unpruned model: macs, params, size_bytes, latency_ms, "
        "latency_p90_ms, latency_device (where it was measured), val_accuracy (and "
        "test_accuracy once finished).",
    )
    best: dict[str, Any] | None = Field(
        None,
        description="The chosen pruned model once finished: trial, plan, macs, params, "
        "size_bytes, latency_ms, latency_p90_ms, latency_device, val_accuracy, "
        "test_accuracy; with kernel or weight steps in pruning.sequence also "
        "nonzero_params and effective_macs.",
    )
    error: ErrorDetail | None = Field(None, description="Why the job failed.")
    detail: str | None = Field(
        None,
        examples=["waiting for device 'pi4': no agent of it is live; ..."],
        description="What the job waits for while it waits (its latency.target device "
        "without a live agent); null otherwise.",
    )
    pretrained: bool = Field(..., description="False when no weights were uploaded.")
    cancel_requested: bool = Field(False, description="Cancel asked; running trials finish.")
    created_at: datetime = Field(
        ..., examples=["2026-11-21T12:00:00"], description="When the job was accepted (UTC)."
    )
    started_at: datetime | None = Field(
        None, examples=["2026-11-21T12:00:02"], description="When a worker took its first trial."
    )
    finished_at: datetime | None = Field(
        None, examples=[None], description="When it succeeded, failed or was cancelled."
    )
    links: JobLinks


class JobList(BaseModel):
    """One page of jobs, newest first."""

    items: list[JobPublic] = Field(..., description="The jobs of this page.")
    total: int = Field(..., examples=[42], description="Jobs of this tenant in all.")
    limit: int = Field(..., examples=[20], description="Page size asked for.")
    offset: int = Field(..., examples=[0], description="Jobs skipped before this page.")
    next: str | None = Field(None, description="URL of the next page, if any.")


class TrialPublic(BaseModel):
    """One candidate the search evaluated."""

    number: int = Field(..., description="Optuna trial number.")
    state: str = Field(
        ..., examples=["complete"], description="running, complete, pruned, fail or waiting."
    )
    values: list[float] | None = Field(None, description="Objective values told to Optuna.")
    val_accuracy: float | None = Field(
        None, examples=[0.91], description="Validation top-1 after fine-tuning."
    )
    proxy_accuracy: float | None = Field(
        None, description="Validation accuracy after BatchNorm recalibration, before fine-tuning."
    )
    macs: int | None = Field(None, examples=[20451056], description="MACs at batch 1.")
    params: int | None = Field(None, examples=[87500], description="Parameters.")
    nonzero_params: int | None = Field(
        None,
        examples=[51200],
        description="With kernel or weight steps in pruning.sequence: parameters less the "
        "weights of removed (all-zero) kernels and the zero recurrent weights; null for a "
        "dense candidate.",
    )
    effective_macs: int | None = Field(
        None,
        examples=[12800000],
        description="With kernel or weight steps in pruning.sequence: MACs less those of "
        "removed kernels and zero recurrent weights, what a sparse-aware runtime would run "
        "(dense runtimes run `macs`); null for a dense candidate.",
    )
    latency_ms: float | None = Field(None, examples=[0.63], description="Median latency.")
    latency_p90_ms: float | None = Field(None, examples=[0.71], description="p90 latency.")
    latency_device: str | None = Field(
        None,
        examples=["local"],
        description="Where the latency was measured: a registered device's name, or "
        "`local` (the worker's machine).",
    )
    latency_source: str | None = Field(
        None,
        examples=["measured"],
        description="measured (end to end) or table (predicted from the device's layer "
        "latency table: `latency.predictor` table).",
    )
    feasible: bool | None = Field(
        None, examples=[True], description="Meets every limit of the budget."
    )
    skipped: str | None = Field(
        None, description="infeasible, pruned or dominated: why the fine-tune was skipped."
    )
    plan: dict[str, int] | None = Field(None, description="Channels kept per group.")
    seconds: dict[str, float] | None = Field(None, description="Seconds per stage.")
    error: str | None = Field(None, examples=[None], description="Why the trial failed.")
    has_checkpoint: bool = Field(
        False,
        description="Weights are kept for this trial (it is the best or on the Pareto front).",
    )


class TrialList(BaseModel):
    """Every trial of a job, by number."""

    objectives: list[str] = Field(
        ..., examples=[["val_accuracy"]], description="What each trial's `values` are."
    )
    items: list[TrialPublic] = Field(..., description="Trials by number.")


class ParetoPointPublic(BaseModel):
    """A non-dominated trial."""

    trial: int = Field(..., examples=[7], description="Trial number.")
    val_accuracy: float = Field(..., examples=[0.91], description="Validation top-1.")
    macs: int = Field(..., examples=[20451056], description="MACs at batch 1.")
    params: int = Field(..., examples=[87500], description="Parameters.")
    latency_ms: float | None = Field(None, examples=[0.63], description="Median latency.")
    latency_device: str | None = Field(
        None, examples=["local"], description="Where it was measured (device name or `local`)."
    )
    latency_source: str | None = Field(
        None, examples=["measured"], description="measured (end to end) or table (predicted)."
    )
    plan: dict[str, int] = Field(
        ..., examples=[{"conv1": 16, "layer1.0.conv1": 8}], description="Channels kept per group."
    )


class ParetoPublic(BaseModel):
    """The accuracy-versus-cost front of a job's feasible trials."""

    objectives: list[str] = Field(
        ..., examples=[["val_accuracy", "macs"]], description="The axes the front is computed on."
    )
    points: list[ParetoPointPublic] = Field(..., description="Front points, cheapest first.")
    hypervolume: float | None = Field(
        None, description="Area dominated in (1 - accuracy, MACs / baseline), reference (1, 1)."
    )
    best_trial: int | None = Field(None, description="The trial the job chose (or will).")
