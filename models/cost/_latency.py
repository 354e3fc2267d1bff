"""Measured latency: warm-up, fixed threads, median and p10/p90 over timed runs."""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.cost._latency_record import Latency, latency_of_runs
from models.errors import ExportError, ModelsError

__all__ = [
    "LATENCY_BACKENDS",
    "ONNX_OPTIMIZATIONS",
    "Latency",
    "OutputCheck",
    "has_onnxruntime_cuda",
    "measure_latency",
    "measure_onnx_latency",
]

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

OutputCheck = Callable[[np.ndarray, np.ndarray], bool]
"""``check(x, output)``: whether an ONNX graph's first output on the input ``x`` is what
its model computes (see :meth:`models.io.OnnxTemplate.output_check`)."""

_SEED = 0


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


def _seeded_input(input_shape: Sequence[int], batch_size: int) -> torch.Tensor:
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


def _onnxruntime_session(
    onnx_bytes: bytes, threads: int, optimization: str, cuda_index: int | None = None
) -> ort.InferenceSession:
    """Return a session as latency is measured in: ``threads`` intra-op threads, one
    inter-op thread, sequential execution, graph optimizations ``optimization``."""
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
        return ort.InferenceSession(onnx_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        raise ModelsError(f"onnxruntime cannot load the model: {exc}") from exc


def _single_input(session: ort.InferenceSession) -> ort.NodeArg:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelsError(f"the ONNX model has {len(inputs)} inputs; latency needs exactly one")
    return inputs[0]


def _onnxruntime_runner(
    session: ort.InferenceSession, x: np.ndarray, check: OutputCheck | None = None
) -> Callable[[], object]:
    """Return a call that runs ``session`` once on ``x``, after one trial run (whose first
    output must pass ``check``, if given)."""
    feed = {_single_input(session).name: x}

    def run() -> list[object]:
        return session.run(None, feed)

    try:
        outputs = run()  # fail here, with a clear message, rather than inside the timing loop
    except Exception as exc:
        raise ModelsError(
            f"onnxruntime cannot run the model on input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    if check is not None and not check(x, np.asarray(outputs[0])):
        raise ExportError("the ONNX graph's output differs from its model's: not timed")
    return run


def _onnx_input(session: ort.InferenceSession, batch_size: int) -> np.ndarray:
    """Return a seeded float32 input for the session's single input, batch ``batch_size``
    where its first dimension is symbolic."""
    arg = _single_input(session)
    if arg.type != "tensor(float)":
        raise ModelsError(f"the ONNX model's input is {arg.type}; latency needs float32")
    shape = [
        batch_size if i == 0 and not isinstance(d, int) else d for i, d in enumerate(arg.shape)
    ]
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelsError(f"the ONNX model's input shape {arg.shape} is not fixed past the batch")
    return np.random.default_rng(_SEED).standard_normal(shape, dtype=np.float32)


def _check_settings(
    threads: int, batch_size: int, warmup: int, repeats: int, optimization: str
) -> None:
    if optimization not in ONNX_OPTIMIZATIONS:
        raise ModelsError(
            f"unknown onnxruntime optimization level {optimization!r}; "
            f"choose one of {', '.join(ONNX_OPTIMIZATIONS)}"
        )
    for name, value, least in (
        ("threads", threads, 1),
        ("batch_size", batch_size, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    ):
        if value < least:
            raise ModelsError(f"latency {name} must be at least {least}, got {value}")


def measure_onnx_latency(
    onnx_bytes: bytes,
    *,
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    optimization: str = "all",
) -> Latency:
    """Return the measured latency of one run of a serialized ONNX model on the CPU.

    Timed as :func:`measure_latency` times an ``onnxruntime`` model: one fresh session
    (CPU provider, ``threads`` intra-op threads, one inter-op thread, sequential
    execution, graph optimizations ``optimization``), ``warmup`` untimed runs, then
    ``repeats`` runs each timed alone with the garbage collector paused. The input is a
    seeded float32 tensor of the model's single input's shape; a symbolic first dimension
    is the batch and gets ``batch_size``.

    Args:
        onnx_bytes: the serialized model, with exactly one float32 input.
        threads: intra-op threads onnxruntime may use.
        batch_size: the batch, where the input's first dimension is symbolic.
        warmup: untimed runs before timing.
        repeats: timed runs.
        optimization: a key of :data:`ONNX_OPTIMIZATIONS`.

    Returns:
        The latency statistics and the settings they were measured with.

    Raises:
        ModelsError: an unknown optimization level, a non-positive setting, or a model
            onnxruntime cannot load or run, that has several inputs, a non-float input,
            or symbolic dimensions past the first.
    """
    _check_settings(threads, batch_size, warmup, repeats, optimization)
    session = _onnxruntime_session(onnx_bytes, threads, optimization)
    x = _onnx_input(session, batch_size)
    durations = _time_runs(_onnxruntime_runner(session, x), warmup, repeats)
    batch = int(x.shape[0]) if x.ndim else batch_size
    return latency_of_runs(durations, "onnxruntime", threads, batch, warmup, "cpu")


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    backend: str = "onnxruntime",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    onnx_bytes: bytes | None = None,
    onnx_optimization: str = "all",
    onnx_check: OutputCheck | None = None,
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
        input_shape: (C, H, W) of one input, or (T, F) for a sequence model.
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
        onnx_check: checks the graph's first output on the timed input before any run
            is timed (``onnxruntime`` only): ``onnx_bytes`` made by other means than
            the exporter, which checks its own (:class:`models.io.OnnxTemplate`), are
            checked in the session that times them instead of a session of their own.

    Returns:
        The latency statistics and the settings they were measured with.

    Raises:
        ModelsError: an unknown backend or optimization level, a device that is not
            the CPU or a visible CUDA device (or onnxruntime without its CUDA provider
            for one), a non-positive setting, or a model the backend cannot run
            (``ExportError`` when the ONNX export fails, or, with ``onnx_check``, when
            onnxruntime cannot load or run the graph or the check refuses its output).
    """
    if backend not in LATENCY_BACKENDS:
        raise ModelsError(
            f"unknown latency backend {backend!r}; choose one of {', '.join(LATENCY_BACKENDS)}"
        )
    _check_settings(threads, batch_size, warmup, repeats, onnx_optimization)
    gpu = None if device == "cpu" else _cuda_device(device)
    x = _seeded_input(input_shape, batch_size)
    where = "cpu" if gpu is None else f"{gpu} ({torch.cuda.get_device_name(gpu)})"
    with _eval_mode(model):
        if backend == "torch" and gpu is not None:
            on_gpu = copy.deepcopy(model).to(gpu)
            with torch.cuda.device(gpu), torch.inference_mode():
                durations = _time_cuda_runs(_torch_runner(on_gpu, x.to(gpu)), warmup, repeats)
        elif backend == "torch":
            with _torch_threads(threads), torch.inference_mode():
                durations = _time_runs(_torch_runner(model, x), warmup, repeats)
        else:
            if onnx_bytes is None:
                # Imported here so that importing models.cost does not depend on models.io.
                from models.io import onnx_model_bytes

                onnx_bytes = onnx_model_bytes(model, input_shape)
            index = gpu.index if gpu is not None else None
            try:
                session = _onnxruntime_session(onnx_bytes, threads, onnx_optimization, index)
                runner = _onnxruntime_runner(session, x.numpy(), onnx_check)
            except ModelsError as exc:
                if onnx_check is None or isinstance(exc, ExportError):
                    raise
                raise ExportError(f"the ONNX graph to check cannot be timed: {exc}") from exc
            durations = _time_runs(runner, warmup, repeats)
    return latency_of_runs(durations, backend, threads, batch_size, warmup, where)
