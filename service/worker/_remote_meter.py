"""Latency measured on the job's target device: requests in the store, agents answer.

:class:`RemoteMeter` is the service's :class:`search.LatencyMeter`: it queues ONNX
models for the tenant's device (one request per model, or one for a whole layer table),
waits for an agent of that device to answer, and says on the job what it waits for when
no agent is live. Results are cached by the store per (device, models, settings).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from models.cost import Latency
from models.io import onnx_model_bytes
from search import LatencyMeter, LatencySettings
from search.latency import MeterFactory
from service.errors import ServiceError
from service.store import (
    BlobStore,
    Job,
    MeasurementStatus,
    latest_device_spec,
    live_agents,
    measurement_state,
    request_measurement,
    set_job_detail,
)
from service.worker._retry import retry_database

__all__ = [
    "DeviceMeters",
    "DeviceUnavailable",
    "RemoteMeter",
    "WaitAbandoned",
    "measurement_key",
    "zip_models",
]

logger = logging.getLogger(__name__)

_POLL_FIRST_S = 0.05
_POLL_MAX_S = 0.5
_LIVENESS_EVERY_S = 2.0


class DeviceUnavailable(ServiceError):
    """The job's target device gave no answer in time, or could not run the model.
    Retrying the trial cannot help: the job fails with this message."""

    code = "device_unavailable"
    status = 503


class WaitAbandoned(ServiceError):
    """The job was cancelled while its trial waited for the device: the trial ends (the
    job then ends cancelled, as when a trial finishes after a cancel)."""

    code = "cancelled"
    status = 409


def measurement_key(models: Sequence[bytes], settings: dict[str, Any]) -> str:
    """Return the cache key of timing ``models`` with ``settings`` (SHA-256, hex)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for model in models:
        digest.update(hashlib.sha256(model).digest())
    return digest.hexdigest()


def zip_models(models: Sequence[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for i, model in enumerate(models):
            archive.writestr(f"{i:06d}.onnx", model)
    return buffer.getvalue()


class RemoteMeter:
    """Measures on a registered device of the job's tenant, through its agents.

    Args:
        sessions: the store.
        blobs: where request payloads go.
        tenant: the job's tenant (agents of other tenants never see its requests).
        device: the device's name (``latency.target``).
        settings: the job's latency settings (onnxruntime; threads, batch, warm-up,
            repeats travel with each request).
        input_shape: (C, H, W) of one input, to export models.
        job_id: the job, whose ``detail`` says when it waits for the device.
        timeout_s: how long to wait for an answer before failing the job.
        live_seconds: how recently an agent must have asked for work to count as live.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        *,
        tenant: str,
        device: str,
        settings: LatencySettings,
        input_shape: tuple[int, ...],
        job_id: str | None,
        timeout_s: float,
        live_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.tenant = tenant
        self.where = device
        self.settings = settings
        self.input_shape = input_shape
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.live_seconds = live_seconds
        self._wire_settings = {
            "threads": settings.threads,
            "batch_size": settings.batch_size,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
        }

    @property
    def channel_block(self) -> int | None:
        """The NCHWc block the device's agent reported (1 when it could not tell: its
        layer table then assumes plain NCHW kernels)."""
        with self.sessions() as session:
            spec = latest_device_spec(session, self.tenant, self.where) or {}
        block = spec.get("nchwc_block")
        return int(block) if isinstance(block, int) and block >= 1 else 1

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        """Return ``model``'s latency on the device (exported to ONNX unless given)."""
        onnx = onnx_bytes if onnx_bytes is not None else onnx_model_bytes(model, self.input_shape)
        return self.measure_onnx([onnx])[0]

    def measure_onnx(self, models: Sequence[bytes]) -> list[Latency]:
        """Return each ONNX model's latency on the device: one request for all of them,
        answered from the cache when the device timed the same models before.

        Raises:
            DeviceUnavailable: no answer within ``timeout_s``, or the device could not
                run the models.
        """
        key = measurement_key(models, self._wire_settings)

        def queue() -> str:
            with self.sessions.begin() as session:
                state = request_measurement(
                    session,
                    self.blobs,
                    tenant=self.tenant,
                    device=self.where,
                    key=key,
                    settings=self._wire_settings,
                    payload=zip_models(models),
                    models=len(models),
                    job_id=self.job_id,
                )
                return state.id

        measurement_id = retry_database(queue, what="queue a latency measurement")
        result = self._wait(measurement_id, len(models))
        threads = int(result.get("threads") or self.settings.threads)
        return [self._latency(stats, threads) for stats in result["latencies"]]

    def _latency(self, stats: dict[str, float], threads: int) -> Latency:
        return Latency(
            median_ms=float(stats["median_ms"]),
            p10_ms=float(stats["p10_ms"]),
            p90_ms=float(stats["p90_ms"]),
            mean_ms=float(stats["mean_ms"]),
            min_ms=float(stats["min_ms"]),
            backend="onnxruntime",
            threads=threads,
            batch_size=self.settings.batch_size,
            repeats=self.settings.repeats,
            warmup=self.settings.warmup,
            device=self.where,
        )

    def _wait(self, measurement_id: str, models: int) -> dict[str, Any]:
        started = time.monotonic()
        delay = _POLL_FIRST_S
        checked_liveness = started - _LIVENESS_EVERY_S
        waiting_said = False
        live = 1
        try:
            while True:
                with self.sessions() as session:
                    state = measurement_state(session, measurement_id)
                if state is None:
                    raise DeviceUnavailable(f"the measurement on device {self.where!r} vanished")
                if state.status == MeasurementStatus.done and state.result is not None:
                    return state.result
                if state.status == MeasurementStatus.failed:
                    raise DeviceUnavailable(
                        f"latency.target: device {self.where!r} could not measure the "
                        f"model: {state.error}"
                    )
                now = time.monotonic()
                if now - checked_liveness >= _LIVENESS_EVERY_S:
                    checked_liveness = now
                    if self._job_cancelled():
                        raise WaitAbandoned(
                            f"the job was cancelled while waiting for device {self.where!r}"
                        )
                    live = self._live_agents()
                    if (live == 0) != waiting_said:
                        waiting_said = live == 0
                        self._say(self._waiting_text() if waiting_said else None)
                if now - started > self.timeout_s:
                    raise DeviceUnavailable(self._timeout_text(live, models))
                time.sleep(delay)
                delay = min(delay * 1.5, _POLL_MAX_S)
        finally:
            if waiting_said:
                self._say(None)

    def _job_cancelled(self) -> bool:
        if self.job_id is None:
            return False
        with self.sessions() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id)))

    def _live_agents(self) -> int:
        with self.sessions() as session:
            return live_agents(session, self.tenant, self.where, self.live_seconds)

    def _waiting_text(self) -> str:
        return (
            f"waiting for device {self.where!r}: no agent of it is live; start "
            f"`inferprune agent --device {self.where}` there (the job fails after "
            f"{self.timeout_s:.0f} s without an answer)"
        )

    def _timeout_text(self, live: int, models: int) -> str:
        why = "no agent of it is live" if live == 0 else "its agents did not finish in time"
        what = "the model" if models == 1 else f"{models} models"
        return (
            f"latency.target: device {self.where!r} did not measure {what} within "
            f"{self.timeout_s:.0f} s ({why}); start `inferprune agent --server URL --token T "
            f"--device {self.where}` on the device (`inferprune devices` lists yours), or "
            "raise INFERPRUNE_DEVICE_TIMEOUT_S"
        )

    def _say(self, detail: str | None) -> None:
        if self.job_id is None:
            return
        try:
            with self.sessions.begin() as session:
                set_job_detail(session, self.job_id, detail)
        except Exception:  # the status line is a courtesy; the wait goes on
            logger.debug("could not update job %s detail", self.job_id, exc_info=True)


@dataclass(frozen=True)
class DeviceMeters:
    """Makes :class:`RemoteMeter` s for a worker's jobs (what they share: the store and
    the settings' timeouts)."""

    sessions: sessionmaker[Session]
    blobs: BlobStore
    timeout_s: float
    live_seconds: float

    def factory(self, tenant: str, job_id: str | None) -> MeterFactory:
        """Return the meter factory of one job of ``tenant`` (see :data:`MeterFactory`)."""

        def make(
            settings: LatencySettings, input_shape: tuple[int, ...], device: torch.device
        ) -> LatencyMeter:
            assert settings.target is not None
            return RemoteMeter(
                self.sessions,
                self.blobs,
                tenant=tenant,
                device=settings.target,
                settings=settings,
                input_shape=input_shape,
                job_id=job_id,
                timeout_s=self.timeout_s,
                live_seconds=self.live_seconds,
            )

        return make
