"""Exports that run without this project's code: ONNX, torch.export ``.pt2``, TorchScript.

Every export has a dynamic batch dimension and, unless asked not to, is checked: the
written artifact is loaded back by its own runtime (onnxruntime, ``torch.export.load``,
``torch.jit.load``) and its outputs on a batch of 1 and a batch of 3 are compared with
the eager model's. Checking the two batch sizes proves the batch dimension really is
dynamic rather than baked in by tracing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.errors import ExportError

__all__ = [
    "EXPORT_FORMATS",
    "export_model",
    "export_onnx",
    "export_pt2",
    "export_torchscript",
    "onnx_model_bytes",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "pt2", "torchscript")
"""Formats :func:`export_model` writes."""

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

# Tracing with a batch of 1 lets exporters specialise the batch dimension (torch.export
# treats sizes 0 and 1 as constants), so every export traces with a batch of 2.
_TRACE_BATCH = 2
_CHECK_BATCHES = (1, 3)
_SEED = 0
_DEFAULT_ATOL = 1e-4

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _example(input_shape: Sequence[int], batch: int) -> torch.Tensor:
    """Return a seeded standard-normal batch of shape (batch, C, H, W)."""
    generator = torch.Generator().manual_seed(_SEED + batch)
    return torch.randn((batch, *input_shape), generator=generator)


def _reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"the model returns {type(out).__name__}, not one tensor of logits; "
            "only single-output classifiers can be exported"
        )
    return out.detach().cpu().numpy()


def _compare(
    reference: np.ndarray, actual: np.ndarray, *, atol: float, what: str, batch: int
) -> None:
    """Raise ExportError unless ``actual`` matches ``reference`` within the tolerance.

    The tolerance is ``atol`` scaled by the largest reference magnitude when that
    exceeds 1, so large logits are not held to an absolute bound float32 cannot meet.
    """
    if reference.shape != actual.shape:
        raise ExportError(
            f"{what} returns shape {tuple(actual.shape)} for a batch of {batch}, "
            f"torch returns {tuple(reference.shape)}"
        )
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    allowed = atol * scale
    max_diff = float(
        np.abs(reference.astype(np.float64) - actual.astype(np.float64)).max(initial=0.0)
    )
    if not max_diff <= allowed:  # also catches NaN
        raise ExportError(
            f"{what} disagrees with torch on a batch of {batch}: max abs difference "
            f"{max_diff:.3g} > allowed {allowed:.3g} (atol {atol:g}); the model may be "
            "nondeterministic or use an operator the format does not support faithfully"
        )


def _check_runtime(
    model: nn.Module,
    input_shape: Sequence[int],
    run: Callable[[torch.Tensor], np.ndarray],
    *,
    atol: float,
    what: str,
) -> None:
    """Compare ``run`` (the exported artifact) with ``model`` on every check batch."""
    for batch in _CHECK_BATCHES:
        x = _example(input_shape, batch)
        reference = _reference(model, x)
        try:
            actual = run(x)
        except ExportError:
            raise
        except Exception as exc:  # each runtime raises its own exception types
            raise ExportError(f"{what} failed to run a batch of {batch}: {exc}") from exc
        _compare(reference, actual, atol=atol, what=what, batch=batch)


def _write(path: PathLike, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ExportError(f"cannot write the export to {os.fspath(path)!r}: {exc}") from exc


@contextlib.contextmanager
def _stdout_discarded() -> Iterator[None]:
    """Send everything written to file descriptor 1 to the null device for the block.

    The TorchScript-based exporter always switches its C++ log on (``setup_onnx_logging``
    tests the function ``_jit_is_onnx_log_enabled`` instead of calling it) and, when it
    fails, dumps the whole IR graph to C++ ``std::cout``: that would corrupt the CLI's
    ``--json`` output. Writes to stdout from other threads during the block are lost too.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _onnx_legacy(
    model: nn.Module, x: torch.Tensor, opset: int | None, *, unfolded: bool = False
) -> bytes:
    """Return the TorchScript exporter's ONNX of ``model`` traced on ``x``; ``unfolded``:
    BatchNorm not folded into the convolutions and no constant folding, so that every
    initializer is a ``state_dict`` tensor under its own name (for
    :class:`models.io.OnnxTemplate`)."""
    buffer = io.BytesIO()
    folding: dict[str, Any] = (
        {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
        if unfolded
        else {}
    )
    with warnings.catch_warnings(), torch.no_grad(), _stdout_discarded():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter accepts a buffer
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            opset_version=opset,
            dynamo=False,
            **folding,
        )
    return buffer.getvalue()


def _onnx_dynamo(model: nn.Module, x: torch.Tensor, opset: int | None) -> bytes:
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (x,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    if program is None:  # only the TorchScript exporter returns None
        raise ExportError("the ONNX exporter returned no program")
    return bytes(program.model_proto.SerializeToString())


def onnx_model_bytes(
    model: nn.Module, input_shape: Sequence[int], *, opset: int | None = None
) -> bytes:
    """Return the model as an ONNX file in memory, with a dynamic batch, unchecked.

    The fast path behind latency measurement: the TorchScript-based exporter is about
    ten times faster than the torch.export-based one, so it is tried first; models it
    cannot express (e.g. adaptive pooling to a size that does not divide the input) go
    through the torch.export-based exporter instead.

    Args:
        model: the network; exported in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        opset: ONNX opset version; the exporter's default if None.

    Returns:
        The serialized ONNX model: input ``"input"`` of shape (batch, C, H, W), output
        ``"logits"`` of shape (batch, num_classes).

    Raises:
        ExportError: neither exporter can export the model.
    """
    x = _example(input_shape, _TRACE_BATCH)
    with _eval_mode(model):
        try:
            return _onnx_legacy(model, x, opset)
        except Exception as legacy_exc:  # it raises many unrelated types; dynamo may cope
            logger.debug("TorchScript ONNX exporter failed (%s); using torch.export", legacy_exc)
            try:
                return _onnx_dynamo(model, x, opset)
            except Exception as exc:
                raise ExportError(
                    f"cannot export the model to ONNX: {exc} "
                    f"(the TorchScript-based exporter also failed: {legacy_exc})"
                ) from exc


def _onnx_runner(data: bytes) -> Callable[[torch.Tensor], np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> np.ndarray:
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        return np.asarray(out)

    return run


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: PathLike | None = None,
    *,
    opset: int | None = None,
    check: bool = True,
    atol: float = _DEFAULT_ATOL,
) -> bytes:
    """Return the model as ONNX with a dynamic batch, checked in onnxruntime.

    Args:
        model: the network; exported in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        path: where to write the file; nothing is written if None.
        opset: ONNX opset version; the exporter's default if None.
        check: run the export in onnxruntime on batches of 1 and 3 and compare with torch.
        atol: largest absolute difference allowed, scaled by the largest logit above 1.

    Returns:
        The serialized ONNX model (input ``"input"``, output ``"logits"``, batch
        dimension ``"batch"``).

    Raises:
        ExportError: the model cannot be exported, onnxruntime cannot run it, its outputs
            differ from torch's, or ``path`` cannot be written.
    """
    data = onnx_model_bytes(model, input_shape, opset=opset)
    if check:
        with _eval_mode(model):
            try:
                runner = _onnx_runner(data)
            except Exception as exc:  # onnxruntime's own exception types
                raise ExportError(f"onnxruntime cannot load the ONNX export: {exc}") from exc
            _check_runtime(model, input_shape, runner, atol=atol, what="the ONNX export")
    if path is not None:
        _write(path, data)
    return data


def export_pt2(
    model: nn.Module,
    input_shape: Sequence[int],
    path: PathLike,
    *,
    check: bool = True,
    atol: float = _DEFAULT_ATOL,
) -> None:
    """Write the model as a torch.export ``.pt2`` program with a dynamic batch.

    Args:
        model: the network; exported in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        path: the ``.pt2`` file to write.
        check: load the written file with ``torch.export.load`` and compare its outputs
            with the model's on batches of 1 and 3.
        atol: largest absolute difference allowed, scaled by the largest logit above 1.

    Raises:
        ExportError: torch.export cannot capture the model, the file cannot be written,
            or the reloaded program disagrees with the model.
    """
    x = _example(input_shape, _TRACE_BATCH)
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with _eval_mode(model):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        except Exception as exc:  # torch.export raises many types (Unsupported, UserError…)
            raise ExportError(f"torch.export cannot capture the model: {exc}") from exc
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        try:
            Path(path).write_bytes(buffer.getvalue())
        except OSError as exc:
            raise ExportError(f"cannot write the export to {os.fspath(path)!r}: {exc}") from exc
        if check:
            # Loads the bytes this function just serialized from memory, never a file
            # from disk (which another process could have swapped) and never an upload.
            buffer.seek(0)
            loaded = torch.export.load(buffer).module()

            def run(t: torch.Tensor) -> np.ndarray:
                with torch.inference_mode():
                    return loaded(t).detach().numpy()

            _check_runtime(model, input_shape, run, atol=atol, what="the .pt2 export")


def export_torchscript(
    model: nn.Module,
    input_shape: Sequence[int],
    path: PathLike,
    *,
    check: bool = True,
    atol: float = _DEFAULT_ATOL,
) -> None:
    """Write the model as a traced TorchScript module.

    Args:
        model: the network; traced in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        path: the file to write (conventionally ``.pt`` or ``.ts``).
        check: load the written file with ``torch.jit.load`` and compare its outputs
            with the model's on batches of 1 and 3.
        atol: largest absolute difference allowed, scaled by the largest logit above 1.

    Raises:
        ExportError: the model cannot be traced, the file cannot be written, or the
            reloaded module disagrees with the model.
    """
    x = _example(input_shape, _TRACE_BATCH)
    with _eval_mode(model), warnings.catch_warnings():
        # TorchScript is deprecated upstream; it is still the format many runtimes load.
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                # check_trace re-runs the model; our own check below compares outputs
                traced = torch.jit.trace(model, (x,), check_trace=False)
        except Exception as exc:  # tracing raises RuntimeError, TypeError, ...
            raise ExportError(f"cannot trace the model to TorchScript: {exc}") from exc
        try:
            torch.jit.save(traced, os.fspath(path))
        except (OSError, RuntimeError) as exc:
            raise ExportError(f"cannot write the export to {os.fspath(path)!r}: {exc}") from exc
        if check:
            loaded = torch.jit.load(os.fspath(path))
            loaded.eval()

            def run(t: torch.Tensor) -> np.ndarray:
                with torch.inference_mode():
                    out: torch.Tensor = loaded(t)
                    return out.detach().numpy()

            _check_runtime(model, input_shape, run, atol=atol, what="the TorchScript export")


def export_model(model: nn.Module, input_shape: Sequence[int], fmt: str, path: PathLike) -> None:
    """Write ``model`` to ``path`` in format ``fmt``, checked against torch.

    Args:
        model: the network; exported in eval mode, its modes restored afterwards.
        input_shape: (C, H, W) of one input.
        fmt: one of :data:`EXPORT_FORMATS`.
        path: the file to write.

    Raises:
        ExportError: ``fmt`` is not a known format, or the export fails its check.
    """
    if fmt == "onnx":
        export_onnx(model, input_shape, path)
    elif fmt == "pt2":
        export_pt2(model, input_shape, path)
    elif fmt == "torchscript":
        export_torchscript(model, input_shape, path)
    else:
        raise ExportError(
            f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
