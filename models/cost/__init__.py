"""What a model costs: MACs, parameters, bytes, and measured latency.

Counts are measured on the real model (:func:`measure_cost`, fvcore for MACs) or
predicted for a plan without building it (:class:`AnalyticCost`). Latency is measured
with warm-up and fixed threads, reported as median and p10/p90
(:func:`measure_latency`, :func:`measure_onnx_latency` for a serialized ONNX model), or
predicted for a plan from per-kernel measurements on the device
(:class:`LatencyTable`, built from :class:`LayerShape` s timed by an
:data:`OnnxTimer`). A kernel-pruned model's zero kernels are counted beside the
dense cost (:func:`measure_sparse_cost`: non-zero parameters, effective MACs).
"""

from __future__ import annotations

from models.cost._analytic import AnalyticCost, check_plans
from models.cost._counting import (
    Cost,
    count_macs,
    count_params,
    macs_by_layer,
    measure_cost,
    size_bytes,
)
from models.cost._latency import (
    LATENCY_BACKENDS,
    ONNX_OPTIMIZATIONS,
    Latency,
    OutputCheck,
    has_onnxruntime_cuda,
    measure_latency,
    measure_onnx_latency,
)
from models.cost._latency_calibration import Calibration, calibration_plans, fit_calibration
from models.cost._latency_table import LatencyTable
from models.cost._latency_timing import OnnxTimer, onnxruntime_timer
from models.cost._layer_shapes import LAYER_OPS, LayerShape, onnxruntime_channel_block
from models.cost._recurrent_macs import RECURRENT_GATES, recurrent_macs
from models.cost._sparsity import SparseCost, kept_kernel_shares, measure_sparse_cost

__all__ = [
    "LATENCY_BACKENDS",
    "LAYER_OPS",
    "ONNX_OPTIMIZATIONS",
    "RECURRENT_GATES",
    "AnalyticCost",
    "Calibration",
    "Cost",
    "Latency",
    "LatencyTable",
    "LayerShape",
    "OnnxTimer",
    "OutputCheck",
    "SparseCost",
    "calibration_plans",
    "check_plans",
    "count_macs",
    "count_params",
    "fit_calibration",
    "kept_kernel_shares",
    "macs_by_layer",
    "measure_cost",
    "has_onnxruntime_cuda",
    "measure_latency",
    "measure_onnx_latency",
    "measure_sparse_cost",
    "onnxruntime_channel_block",
    "onnxruntime_timer",
    "recurrent_macs",
    "size_bytes",
]
