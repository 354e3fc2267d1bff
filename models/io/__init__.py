"""Weights in, checkpoints and exports out.

In: :func:`read_state_dict` / :func:`load_weights` take safetensors or a state_dict
saved by ``torch.save``, read with ``torch.load(..., weights_only=True)``; nothing else
is ever unpickled. Out: :func:`save_pruned` writes safetensors whose metadata (arch,
num_classes, input_shape, plan) lets :func:`load_pruned` rebuild the exact structure
(the state_dict's per-module versions travel with it, as some modules need them to
load), and :func:`export_model` writes ONNX (dynamic batch), torch.export ``.pt2`` or
TorchScript, each checked against torch's outputs. For latency, :class:`OnnxTemplate`
turns a channel-pruned copy of a model into ONNX without exporting it again: the
model's graph, exported once, with the copy's tensors (checked in onnxruntime).
"""

from __future__ import annotations

from models.io._checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointInfo,
    checkpoint_bytes,
    load_pruned,
    read_checkpoint_info,
    read_checkpoint_state,
    save_pruned,
)
from models.io._export import (
    EXPORT_FORMATS,
    export_model,
    export_onnx,
    export_pt2,
    export_torchscript,
    onnx_model_bytes,
)
from models.io._model import load_model
from models.io._onnx_import import (
    SUPPORTED_OPS,
    OnnxImport,
    OnnxNet,
    check_against_onnxruntime,
    import_onnx,
)
from models.io._onnx_template import OnnxTemplate
from models.io._onnx_unfold import unfold_batchnorm
from models.io._weights import (
    StateDict,
    WeightsSource,
    check_finite,
    fit_state_dict,
    load_weights,
    read_state_dict,
    weights_format,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "EXPORT_FORMATS",
    "CheckpointInfo",
    "OnnxImport",
    "OnnxNet",
    "OnnxTemplate",
    "SUPPORTED_OPS",
    "StateDict",
    "WeightsSource",
    "check_against_onnxruntime",
    "check_finite",
    "checkpoint_bytes",
    "export_model",
    "export_onnx",
    "export_pt2",
    "export_torchscript",
    "fit_state_dict",
    "import_onnx",
    "load_model",
    "unfold_batchnorm",
    "load_pruned",
    "load_weights",
    "onnx_model_bytes",
    "read_checkpoint_info",
    "read_checkpoint_state",
    "read_state_dict",
    "save_pruned",
    "weights_format",
]
