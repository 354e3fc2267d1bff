"""Measured latency: warm-up, fixed threads, median and p10/p90 over timed runs."""

from __future__ import annotations

import copy
import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.errors import ModelsError

__all__ = [
    "LATENCY_BACKENDS",
    "ONNX_OPTIMIZATIONS",
    "Latency",
    "has_onnxruntime_cuda",
    "measure_latency",
]

logger = logging.getLogger(__name__)

LATENCY_BACKENDS: tuple[str, ...] = ("onnxruntime", "torch")
"""Backends :func:`measure_latency` can time a model with."""

ONNX_OPTIMIZATIONS: dict[str, ort.GraphOptimizationLevel] = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
"""onnxruntime graph optimization levels by name. ``all`` (the default, as deployed)
adds layout changes such as NCHWc to ``extended``'s fusions."""

_SEED = 0


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass, over repeated timed runs.

    Attributes:
        median_ms: median over the timed runs, in milliseconds.
        p10_ms: 10th percentile (numpy's linear interpolation), in milliseconds.
        p90_ms: 90th percentile, in milliseconds.
        mean_ms: mean over the timed runs, in milliseconds.
        min_ms: fastest timed run, in milliseconds.
        backend: ``"torch"`` or ``"onnxruntime"``.
        threads: intra-op threads the backend was limited to.
        batch_size: inputs per forward pass.
        repeats: timed runs.
        warmup: untimed runs before the timed ones.
        device: where it was measured: ``cpu``, or ``cuda:N (GPU name)``.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    backend: str
    threads: int
    batch_size: int
    repeats: int
    warmup: int
    device: str = "cpu"

    def to_dict(self) -> dict[str, float]:
        """Return the statistics in milliseconds, keyed as ``latency_ms`` in reports.

        Returns:
            ``{"median", "p10", "p90", "mean", "min"}`` in milliseconds; the settings
            (backend, threads, ...) stay attributes.
        """
        return {
            "median": self.median_ms,
            "p10": self.p10_ms,
            "p90": self.p90_ms,
            "mean": self.mean_ms,
            "min": self.min_ms,
        }


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Limit torch's intra-op pool to ``threads`` for the block, then restore it.

    The inter-op pool is left alone: torch allows setting it only once per process,
    and a single forward pass does not use it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the garbage collector from running inside timed runs.

    Only the youngest generation is collected first: a full ``gc.collect()`` walks every
    object of the process (0.2 s in a worker holding torch, Optuna and SQLAlchemy), and
    with the collector disabled nothing left over can interrupt a timed run anyway.
    """
    gc.collect(0)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_runs(run: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    """Return the duration in ms of each of ``repeats`` calls, after ``warmup`` untimed."""
    for _ in range(warmup):
        run()
    durations = np.empty(repeats, dtype=np.float64)
    with _gc_paused():
        for i in range(repeats):
            start = time.perf_counter_ns()
            run()
            durations[i] = time.perf_counter_ns() - start
    return durations / 1e6


def _seeded_input(input_shape: tuple[int, int, int], batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_SEED)
    return torch.randn((batch_size, *input_shape), generator=generator)


def _torch_runner(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        return model(x)

    try:
        run()  # fail here, with a clear message, rather than inside the timing loop
    except Exception as exc:  # whatever the model's forward raises
        raise ModelsError(
            f"torch cannot run the model on input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    return run


def _time_cuda_runs(run: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    """Return the device time in ms of each of ``repeats`` calls, measured between CUDA
    events recorded around each call on the current stream (after ``warmup`` untimed
    calls and a synchronisation)."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    durations = np.empty(repeats, dtype=np.float64)
    with _gc_paused():
        for i in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            durations[i] = start.elapsed_time(end)
    return durations


def has_onnxruntime_cuda() -> bool:
    """Return whether this onnxruntime can run models on a CUDA GPU."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _cuda_device(device: str) -> torch.device:
    """Return the CUDA device ``device`` names, or raise a clear error."""
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise ModelsError(f"latency device {device!r} is not a device: use cpu or cuda:N") from exc
    if target.type != "cuda":
        raise ModelsError(f"latency on device {device!r} is not supported; use cpu or cuda:N")
    index = target.index or 0
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise ModelsError(f"latency device {device}: torch sees no such CUDA device here")
    return torch.device("cuda", index)


def _onnxruntime_runner(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    x: torch.Tensor,
    threads: int,
    onnx_bytes: bytes | None,
    optimization: str,
    cuda_index: int | None = None,
) -> Callable[[], object]:
    if onnx_bytes is None:
        # Imported here so that importing models.cost does not depend on models.io.
        from models.io import onnx_model_bytes

        onnx_bytes = onnx_model_bytes(model, input_shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ONNX_OPTIMIZATIONS[optimization]
    options.log_severity_level = 3
    providers: list[str | tuple[str, dict[str, object]]] = ["CPUExecutionProvider"]
    if cuda_index is not None:
        if not has_onnxruntime_cuda():
            raise ModelsError(
                "onnxruntime has no CUDA execution provider here: install onnxruntime-gpu, "
                "or measure GPU latency with latency.backend torch"
            )
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index}))
    try:
        session = ort.InferenceSession(onnx_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        raise ModelsError(f"onnxruntime cannot load the model: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelsError(f"the ONNX model has {len(inputs)} inputs; latency needs exactly one")
    feed = {inputs[0].name: x.numpy()}

    def run() -> object:
        return session.run(None, feed)

    try:
        run()  # fail here, with a clear message, rather than inside the timing loop
    except Exception as exc:
        raise ModelsError(
            f"onnxruntime cannot run the model on input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    return run


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    backend: str = "onnxruntime",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    onnx_bytes: bytes | None = None,
    onnx_optimization: str = "all",
) -> Latency:
    """Return the measured latency of one forward pass of ``model``.

    ``warmup`` untimed runs come first; then each of ``repeats`` runs is timed alone
    with ``time.perf_counter_ns``, the garbage collector paused. The input is a fixed,
    seeded batch. For ``onnxruntime`` the model is exported to ONNX in memory (or
    ``onnx_bytes`` is used) and run in one fresh session: CPU provider, ``threads``
    intra-op threads, one inter-op thread, sequential execution, graph optimizations
    ``onnx_optimization`` (all, by default). For ``torch`` the model runs in eval mode under
    ``torch.inference_mode`` with torch's thread count set to ``threads`` and restored
    afterwards. Not thread-safe: torch's thread count is process-wide.

    Args:
        model: the network; timed in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        backend: one of :data:`LATENCY_BACKENDS`.
        threads: intra-op threads the backend may use.
        batch_size: inputs per forward pass.
        warmup: untimed runs before timing.
        repeats: timed runs.
        device: ``"cpu"``, or ``"cuda:N"``: torch runs the model (a copy, on that GPU)
            timed by CUDA events around each run; onnxruntime runs it with its CUDA
            execution provider (``onnxruntime-gpu``), timed by the wall clock of each
            synchronous ``run``.
        onnx_bytes: an ONNX export of ``model`` to time instead of exporting it again
            (``onnxruntime`` only).
        onnx_optimization: a key of :data:`ONNX_OPTIMIZATIONS` (``onnxruntime`` only).

    Returns:
        The latency statistics and the settings they were measured with.

    Raises:
        ModelsError: an unknown backend or optimization level, a device that is not
            the CPU or a visible CUDA device (or onnxruntime without its CUDA provider
            for one), a non-positive setting, or a model the backend cannot run
            (``ExportError`` when the ONNX export fails).
    """
    if backend not in LATENCY_BACKENDS:
        raise ModelsError(
            f"unknown latency backend {backend!r}; choose one of {', '.join(LATENCY_BACKENDS)}"
        )
    if onnx_optimization not in ONNX_OPTIMIZATIONS:
        raise ModelsError(
            f"unknown onnxruntime optimization level {onnx_optimization!r}; "
            f"choose one of {', '.join(ONNX_OPTIMIZATIONS)}"
        )
    gpu = None if device == "cpu" else _cuda_device(device)
    for name, value, least in (
        ("threads", threads, 1),
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    ):
        if value < least:
            raise ModelsError(f"latency {name} must be at least {least}, got {value}")

    x = _seeded_input(input_shape, batch_size)
    where = "cpu"
    with _eval_mode(model):
        if backend == "torch" and gpu is not None:
            where = f"{gpu} ({torch.cuda.get_device_name(gpu)})"
            on_gpu = copy.deepcopy(model).to(gpu)
            with torch.cuda.device(gpu), torch.inference_mode():
                durations = _time_cuda_runs(_torch_runner(on_gpu, x.to(gpu)), warmup, repeats)
        elif backend == "torch":
            with _torch_threads(threads), torch.inference_mode():
                durations = _time_runs(_torch_runner(model, x), warmup, repeats)
        else:
            index = gpu.index if gpu is not None else None
            runner = _onnxruntime_runner(
                model, input_shape, x, threads, onnx_bytes, onnx_optimization, index
            )
            durations = _time_runs(runner, warmup, repeats)
            if gpu is not None:
                where = f"{gpu} ({torch.cuda.get_device_name(gpu)})"

    p10, median, p90 = np.percentile(durations, [10, 50, 90])
    latency = Latency(
        median_ms=float(median),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=float(durations.mean()),
        min_ms=float(durations.min()),
        backend=backend,
        threads=threads,
        batch_size=batch_size,
        repeats=repeats,
        warmup=warmup,
        device=where,
    )
    logger.debug(
        "latency %s: median %.3f ms (p10 %.3f, p90 %.3f)",
        backend,
        latency.median_ms,
        latency.p10_ms,
        latency.p90_ms,
    )
    return latency
