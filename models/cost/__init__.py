"""What a model costs: MACs, parameters, bytes, and measured latency.

Counts are measured on the real model (:func:`measure_cost`, fvcore for MACs) or
predicted for a plan without building it (:class:`AnalyticCost`). Latency is measured
with warm-up and fixed threads, reported as median and p10/p90
(:func:`measure_latency`).
"""

from __future__ import annotations

from models.cost._analytic import AnalyticCost
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
    has_onnxruntime_cuda,
    measure_latency,
)

__all__ = [
    "LATENCY_BACKENDS",
    "ONNX_OPTIMIZATIONS",
    "AnalyticCost",
    "Cost",
    "Latency",
    "count_macs",
    "count_params",
    "macs_by_layer",
    "measure_cost",
    "has_onnxruntime_cuda",
    "measure_latency",
    "size_bytes",
]
