"""Service settings from the environment (``INFERPRUNE_*``) and command-line overrides."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    """Everything the API and the workers can be configured with.

    Values come from ``INFERPRUNE_<NAME>`` environment variables; the CLI overrides some
    of them. Nothing is read at import time: call :func:`get_settings`.
    """

    model_config = SettingsConfigDict(env_prefix="INFERPRUNE_", extra="ignore")

    data_dir: Path = Field(
        Path("inferprune-data"),
        description="Folder for the embedded SQLite database, the saved client token and "
        "the workers' local caches.",
    )
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the store; default: SQLite in data_dir."
    )
    artifact_root: Path | None = Field(
        None,
        description="Keep upload and artifact bytes in this folder instead of the "
        "database (every worker must see the same folder).",
    )
    device: str = Field(
        "auto",
        description="Where workers train and evaluate: auto (a GPU when torch sees one), "
        "cpu, cuda, cuda:N or mps. `inferprune serve --device cuda` gives each worker its "
        "own GPU.",
    )
    data_root: Path | None = Field(
        None, description="Where workers find public data sets (cifar10, mnist, ...)."
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest accepted request body."
    )
    max_trials_per_job: int = Field(500, ge=1, description="Largest search.trials accepted.")
    max_model_bytes: int = Field(
        4 * 2**30,
        ge=2**20,
        description="Largest estimated memory (float32 parameters plus twice the "
        "activations of one input) of a submitted job's model at its input shape; "
        "estimated without building it, before validation builds it.",
    )
    max_dataset_bytes: int = Field(
        2**30,
        ge=2**20,
        description="Largest total size the arrays of an uploaded .npz unpack to "
        "(counted from the zip and array headers, then while reading).",
    )
    check_public_datasets: bool = Field(
        True,
        description="Refuse at submission a public data set (cifar10, mnist, ...) whose "
        "files are not under data_root; turn off when the API does not see the "
        "workers' data root.",
    )
    max_active_jobs_per_tenant: int = Field(
        4, ge=1, description="Jobs a tenant may have queued or running at once."
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A worker that has not renewed its lease for this long is "
        "presumed dead and its trial is retried.",
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often workers renew leases.")
    max_trial_attempts: int = Field(
        3, ge=1, description="Times one trial is tried before it counts as failed for good."
    )
    max_failed_trials: int = Field(
        10, ge=1, description="A job fails when this many of its trials failed for good."
    )
    poll_seconds: float = Field(1.0, gt=0, description="Idle workers look for work this often.")
    device_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A job whose latency.target device gives no answer for this long (no "
        "live agent, or agents that never finish) fails with an error saying so.",
    )
    agent_wait_seconds: float = Field(
        20.0,
        gt=0,
        le=120,
        description="How long an agent's request for work waits for one (a long poll).",
    )
    agent_live_seconds: float = Field(
        60.0,
        gt=0,
        description="An agent that has not asked for work for this long is not live.",
    )
    agent_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="An agent that has not renewed its hold on a measurement for this "
        "long is presumed gone; another agent of the device takes the measurement.",
    )
    max_measurement_attempts: int = Field(
        3, ge=1, description="Agents a measurement may be handed to before it fails."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text or as one JSON object each."
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Intra-op threads per worker (default: cores / workers)."
    )

    @property
    def database_url(self) -> str:
        """The store's SQLAlchemy URL (the embedded SQLite file unless ``db_url`` is set)."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'inferprune.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """Return the process's settings, read from the environment once."""
    return Settings()
