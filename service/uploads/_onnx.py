"""An uploaded ONNX model: imported as data (never executed as code), checked against
onnxruntime, and the spec completed with the model's input shape and classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.spec import JobSpec
from service.uploads._errors import UploadError

if TYPE_CHECKING:
    from models.io import OnnxImport

__all__ = ["open_onnx", "spec_for_onnx"]


def open_onnx(data: bytes) -> OnnxImport:
    """Return the uploaded ONNX model rebuilt as a torch module.

    Raises:
        UploadError: ``invalid_model``: not a valid ONNX file, weights outside the file,
            an operator the importer does not know (each named), limits broken (nodes,
            initializer sizes), or outputs that differ from onnxruntime's.
    """
    from models.errors import WeightsError
    from models.io import check_against_onnxruntime, import_onnx

    try:
        imported = import_onnx(data)
        check_against_onnxruntime(data, imported)
    except WeightsError as exc:
        raise UploadError("invalid_model", str(exc)) from None
    return imported


def spec_for_onnx(spec: JobSpec, imported: OnnxImport) -> JobSpec:
    """Return ``spec`` with the model's input shape and classes (which it may leave out,
    or must give as the model has them).

    Raises:
        UploadError: ``invalid_spec``: the spec names an ``arch`` too, or an input shape
            or class count the model does not have.
    """
    if spec.arch is not None:
        raise UploadError(
            "invalid_spec",
            f"arch: leave it out when uploading a `model`: the ONNX file is the "
            f"architecture (or send the zoo's {spec.arch} without the file)",
        )
    from search.errors import SpecError
    from search.loading import spec_for_model

    try:
        return spec_for_model(spec, imported.input_shape, imported.num_classes)
    except SpecError as exc:
        raise UploadError("invalid_spec", str(exc)) from None
