"""The names users pick from: criteria, schedules and built-in data sets (no torch).

This module is the one list of each. :mod:`models.criteria`, :mod:`models.schedules` and
:mod:`models.data` build their registries from it, and :mod:`search.spec` (so the API
process, which must start without torch) validates job specs against it. Importing it
imports nothing heavy.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "CRITERION_NAMES",
    "DATASET_NAMES",
    "DATA_CRITERIA",
    "CriterionName",
    "DatasetName",
    "GRANULARITIES",
    "Granularity",
    "KERNEL_CRITERION_NAMES",
    "KernelCriterionName",
    "RECURRENT_CRITERIA",
    "SCHEDULE_NAMES",
    "STEP_CRITERIA",
    "ScheduleName",
    "WEIGHT_CRITERION_NAMES",
]

CriterionName = Literal[
    "l1",
    "l2",
    "fpgm",
    "hybrid",
    "random",
    "taylor",
    "activation_mean",
    "activation_l2",
    "apoz",
]
"""A pruning criterion of :mod:`models.criteria`, weight-only ones first."""

CRITERION_NAMES: tuple[str, ...] = get_args(CriterionName)
"""Every criterion name, in the order of :data:`CriterionName`."""

DATA_CRITERIA: frozenset[str] = frozenset({"taylor", "activation_mean", "activation_l2", "apoz"})
"""Criteria that need calibration batches."""

Granularity = Literal["channel", "kernel", "weight"]
"""What one pruning step removes: whole channels (or hidden units), single k×k kernels of
filters, or single input-to-hidden and hidden-to-hidden weights of LSTM/GRU layers."""

GRANULARITIES: tuple[str, ...] = get_args(Granularity)
"""Every granularity, in the order of :data:`Granularity`."""

KernelCriterionName = Literal["l1", "l2", "fpgm", "random"]
"""A criterion that scores single kernels: their norm, their similarity to the other
kernels of the same filter (fpgm), or a seeded random baseline."""

KERNEL_CRITERION_NAMES: tuple[str, ...] = get_args(KernelCriterionName)
"""Every kernel criterion name, in the order of :data:`KernelCriterionName`."""

WEIGHT_CRITERION_NAMES: tuple[str, ...] = ("l1",)
"""Criteria that rank single recurrent weights: their magnitude (``l1``), smallest first,
within each ``weight_ih``/``weight_hh`` matrix (AGP magnitude pruning)."""

STEP_CRITERIA: dict[str, tuple[str, ...]] = {
    "channel": CRITERION_NAMES,
    "kernel": KERNEL_CRITERION_NAMES,
    "weight": WEIGHT_CRITERION_NAMES,
}
"""Granularity → the criteria a sequence step of that granularity may rank by."""

RECURRENT_CRITERIA: tuple[str, ...] = ("l1", "l2", "random")
"""Criteria that can rank the hidden units of LSTM/GRU layers (the data-driven ones hook
convolution and linear outputs)."""

DatasetName = Literal[
    "digits",
    "synthetic",
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "digits_seq",
    "fashion_mnist_seq",
]
"""A built-in data set of :mod:`models.data`; ``imagefolder:<dir>`` and ``.npz`` files
come on top of these. The ``_seq`` ones are sequences (T, F) for recurrent models."""

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
"""Every built-in data set name, in the order of :data:`DatasetName`."""

ScheduleName = Literal[
    "one_shot",
    "iterative",
    "dropnet",
    "agp",
    "one_cycle",
    "while_training",
    "adaptive",
]
"""A pruning schedule of :mod:`models.schedules`: how pruning happens over a fine-tune."""

SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
"""Every schedule name, in the order of :data:`ScheduleName` (``one_shot`` first)."""
