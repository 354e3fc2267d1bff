"""Wire schemas of target devices and of the agent protocol (``/v1/devices``,
``/v1/agent/*``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from search.spec import DEVICE_NAME_PATTERN

__all__ = [
    "AgentId",
    "AgentRegistered",
    "AgentRegistration",
    "DeviceList",
    "DevicePublic",
    "MeasurementResult",
    "MeasurementTask",
    "NextRequest",
    "TimedModel",
]

_AGENT_ID = Field(..., min_length=1, max_length=32, description="The id registration gave.")


class DevicePublic(BaseModel):
    """A target device of the tenant: the name its agents registered under."""

    name: str = Field(..., examples=["pi4"], description="Device name (`latency.target`).")
    spec: dict[str, Any] = Field(
        ...,
        description="What its most recently seen agent reported: cpu, cores, os, machine, "
        "python, onnxruntime (version), available_providers, providers, max_threads.",
    )
    last_seen_at: datetime = Field(..., description="When an agent last asked for work (UTC).")
    live: bool = Field(..., description="An agent asked for work recently.")
    agents_live: int = Field(..., examples=[1], description="Agents that asked recently.")
    queued: int = Field(..., examples=[0], description="Measurements waiting for an agent.")
    measuring: int = Field(..., examples=[1], description="Measurements an agent holds now.")
    measured: int = Field(..., examples=[42], description="Measurements answered (cached).")


class DeviceList(BaseModel):
    """The tenant's devices by name."""

    items: list[DevicePublic] = Field(..., description="The devices, by name.")


class AgentRegistration(BaseModel):
    """An agent announcing itself (again, after a restart or a network drop)."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(
        ..., pattern=DEVICE_NAME_PATTERN, examples=["pi4"], description="The device's name."
    )
    agent_id: str | None = Field(
        None, max_length=32, description="The id a previous registration gave, to keep it."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict, description="What the agent knows about its device."
    )


class AgentRegistered(BaseModel):
    """The agent's id and how to behave."""

    agent_id: str = Field(..., description="Send it with every later request.")
    wait_s: float = Field(..., description="How long to ask `/v1/agent/next` to wait.")
    lease_s: float = Field(
        ..., description="A measurement not renewed for this long goes to another agent."
    )


class AgentId(BaseModel):
    """A request naming the agent that sends it."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = _AGENT_ID


class NextRequest(AgentId):
    """An agent asking for work, ready to wait for it."""

    wait_s: float = Field(20.0, ge=0, le=120, description="Seconds to wait for a request.")


class MeasurementTask(BaseModel):
    """A measurement an agent now holds."""

    id: str = Field(..., description="Measurement id.")
    models: int = Field(..., description="ONNX models in the zip at `models_url`.")
    models_url: str = Field(..., description="GET it (with `agent_id`) for the models.")
    settings: dict[str, Any] = Field(
        ..., description="threads, batch_size, warmup, repeats (the job's latency settings)."
    )
    lease_s: float = Field(..., description="Renew the hold before this many seconds pass.")


class TimedModel(BaseModel):
    """One model's latency statistics, in milliseconds."""

    model_config = ConfigDict(extra="forbid")

    median_ms: float = Field(..., ge=0, description="Median over the timed runs.")
    p10_ms: float = Field(..., ge=0, description="10th percentile.")
    p90_ms: float = Field(..., ge=0, description="90th percentile.")
    mean_ms: float = Field(..., ge=0, description="Mean over the timed runs.")
    min_ms: float = Field(..., ge=0, description="Fastest timed run.")


class MeasurementResult(AgentId):
    """An agent's answer: the latency of every model, or why it could not measure them."""

    latencies: list[TimedModel] | None = Field(None, description="One per model, in order.")
    threads: int | None = Field(None, ge=1, description="Intra-op threads actually used.")
    error: str | None = Field(
        None, max_length=4000, description="Why the models could not be run here."
    )
