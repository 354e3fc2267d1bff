"""Where a candidate's latency comes from: a meter, measuring on some machine.

A :class:`LatencyMeter` times models under one job's ``latency`` settings. This module
has the local one (the worker's CPU, or its GPU); the service adds one that sends ONNX
models to an ``inferprune agent`` on the job's target device and waits for the answer.
Whichever it is, the search only sees the Protocol, and every latency it records names
the meter's :attr:`~LatencyMeter.where`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from functools import cache
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from models.cost import (
    Latency,
    OutputCheck,
    has_onnxruntime_cuda,
    measure_latency,
    measure_onnx_latency,
)
from search.spec import LatencySettings

__all__ = ["LOCAL", "LatencyMeter", "LocalMeter", "MeterFactory", "OutputCheckingMeter"]

logger = logging.getLogger(__name__)

LOCAL = "local"
"""What latencies measured on the worker's own machine say they were measured on."""


@runtime_checkable
class LatencyMeter(Protocol):
    """Times models under fixed latency settings on one machine.

    ``where`` names that machine wherever a latency is reported: ``local`` (the
    worker's CPU), ``local cuda:N`` (its GPU) or a registered device's name. A meter may
    block as long as the measurement takes (a remote one: until an agent answers, or
    until it gives up with an error that fails the job). Meters are called from one
    thread at a time.
    """

    where: str

    @property
    def channel_block(self) -> int | None:
        """onnxruntime's NCHWc channel block on the machine (16 with AVX-512, 8 with
        AVX2, 1 without blocked kernels), for the layer table; None: this machine's."""
        ...

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        """Return the latency of ``model`` (exported to ONNX first unless ``onnx_bytes``
        is its export)."""
        ...

    def measure_onnx(self, models: Sequence[bytes]) -> list[Latency]:
        """Return the latency of each serialized ONNX model, in order (one request: the
        layer table sends hundreds of one-layer models at once)."""
        ...


@runtime_checkable
class OutputCheckingMeter(Protocol):
    """A :class:`LatencyMeter` that runs ONNX graphs where the model is (this process), so
    that it can check a graph's output against the model's in the session that times it,
    instead of the graph's maker checking it in a session of its own."""

    @property
    def checks_outputs(self) -> bool:
        """Whether :meth:`measure_checked` can judge a graph here: its outputs match
        torch's on the CPU within the exports' tolerance (a GPU's kernels, TF32 among
        them, may not)."""
        ...

    def measure_checked(self, model: nn.Module, onnx_bytes: bytes, check: OutputCheck) -> Latency:
        """Return the latency of ``model`` timed as its graph ``onnx_bytes``, once the
        graph's first output on the timed input passed ``check``.

        Raises:
            ExportError: onnxruntime cannot load or run the graph, or ``check`` refused
                its output; nothing was timed.
            ModelsError: the meter's own settings or device (as :meth:`measure`).
        """
        ...


MeterFactory = Callable[[LatencySettings, tuple[int, ...], torch.device], LatencyMeter]
"""Makes a job's meter from its latency settings, its model's input shape and the
device the worker trains on (:class:`LocalMeter` is one; the service has another)."""


class LocalMeter:
    """Measures on the worker's own machine: its CPU, or its GPU on a CUDA worker (the
    job's target is then that GPU).

    On a GPU, onnxruntime needs its CUDA execution provider (``onnxruntime-gpu``);
    without it torch times the model with CUDA events instead, and the result says so
    (``backend``).
    """

    def __init__(
        self, settings: LatencySettings, input_shape: tuple[int, ...], device: torch.device
    ) -> None:
        self.settings = settings
        self.input_shape = input_shape
        self._device = str(device) if device.type == "cuda" else "cpu"
        self.where = LOCAL if self._device == "cpu" else f"{LOCAL} {self._device}"

    @property
    def channel_block(self) -> int | None:
        """None: the layer table probes this machine's onnxruntime itself."""
        return None

    def measure(self, model: nn.Module, onnx_bytes: bytes | None = None) -> Latency:
        """Return ``model``'s latency under the settings (see :func:`measure_latency`)."""
        return self._measure(model, onnx_bytes, None)

    def _measure(
        self, model: nn.Module, onnx_bytes: bytes | None, check: OutputCheck | None
    ) -> Latency:
        settings = self.settings
        backend = settings.backend
        if self._device != "cpu" and backend == "onnxruntime" and not has_onnxruntime_cuda():
            _warn_once_no_onnxruntime_cuda()
            backend = "torch"
        latency = measure_latency(
            model,
            self.input_shape,
            backend=backend,
            threads=settings.threads,
            batch_size=settings.batch_size,
            warmup=settings.warmup,
            repeats=settings.repeats,
            device=self._device,
            onnx_bytes=onnx_bytes if backend == "onnxruntime" else None,
            onnx_check=check if backend == "onnxruntime" else None,
        )
        return self._here(latency)

    @property
    def checks_outputs(self) -> bool:
        """True on the CPU (:class:`OutputCheckingMeter`); a GPU's outputs differ from
        torch's on the CPU by more than the check allows."""
        return self._device == "cpu"

    def measure_checked(self, model: nn.Module, onnx_bytes: bytes, check: OutputCheck) -> Latency:
        """Return ``model``'s latency timed as its graph ``onnx_bytes`` once ``check`` passed
        on the graph's output (:class:`OutputCheckingMeter`; see :func:`measure_latency`'s
        ``onnx_check``)."""
        return self._measure(model, onnx_bytes, check)

    def measure_onnx(self, models: Sequence[bytes]) -> list[Latency]:
        """Return each ONNX model's latency on this machine's CPU with onnxruntime."""
        settings = self.settings
        return [
            self._here(
                measure_onnx_latency(
                    onnx,
                    threads=settings.threads,
                    batch_size=settings.batch_size,
                    warmup=settings.warmup,
                    repeats=settings.repeats,
                )
            )
            for onnx in models
        ]

    def _here(self, latency: Latency) -> Latency:
        """Return ``latency`` saying it was measured here (``local``, ``local cuda:N (GPU)``)."""
        where = LOCAL if latency.device == "cpu" else f"{LOCAL} {latency.device}"
        return dataclasses.replace(latency, device=where)


@cache
def _warn_once_no_onnxruntime_cuda() -> None:
    logger.warning("onnxruntime has no CUDA provider here: timing GPU latency with torch")
