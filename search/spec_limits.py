"""The names and bounds a job spec may hold (see :mod:`search.spec`).

Every number of the spec is bounded: what lies outside could only fail later, in a
worker (numpy seeds are 32-bit) or in the API process (a huge input is built to be
validated). The bounds sit far beyond any real use.
"""

from __future__ import annotations

from typing import Literal, get_args

from models.names import (
    CriterionName,
)

__all__ = [
    "Criterion",
    "MAX_BUDGET_MACS",
    "MAX_COMPUTE_EPOCHS",
    "MAX_DATASET_CHARS",
    "MAX_IGNORED_LAYERS",
    "MAX_INPUT_CHANNELS",
    "MAX_INPUT_FEATURES",
    "MAX_INPUT_SIDE",
    "MAX_LATENCY_MS",
    "MAX_LAYER_NAME_CHARS",
    "MAX_NAME_CHARS",
    "MAX_NUM_CLASSES",
    "MAX_PARAMS",
    "MAX_SCHEDULE_STEPS",
    "MAX_SEED",
    "MAX_STEPS_PER_TRIAL",
    "MAX_TIMEOUT_S",
    "MAX_TIME_STEPS",
    "MAX_TRIALS",
    "OBJECTIVES",
    "Objective",
    "SAMPLERS",
    "Sampler",
]

Sampler = Literal["tpe", "gp", "nsga2", "random", "qmc"]
Objective = Literal["constrained", "pareto", "scalar"]
Criterion = CriterionName
"""The criteria of :mod:`models.criteria`, from the torch-free :mod:`models.names`."""

SAMPLERS: tuple[str, ...] = get_args(Sampler)
OBJECTIVES: tuple[str, ...] = get_args(Objective)

MAX_TRIALS = 10_000
MAX_SEED = 2**31 - 1
"""Largest seed: numpy, scikit-learn and Optuna's samplers take 32-bit seeds."""
MAX_INPUT_CHANNELS = 64
"""Largest number of input channels (RGB is 3; multispectral stacks stay far below)."""
MAX_INPUT_SIDE = 2048
"""Largest input height and width in pixels (ImageNet models use 224 to 600)."""
MAX_TIME_STEPS = 100_000
"""Largest number of time steps T of a sequence input (T, F)."""
MAX_INPUT_FEATURES = 4096
"""Largest number of features F per time step of a sequence input (T, F)."""
MAX_NUM_CLASSES = 100_000
MAX_BUDGET_MACS = 10**15
MAX_PARAMS = 1e12
MAX_LATENCY_MS = 3_600_000.0
MAX_TIMEOUT_S = 30 * 24 * 3600.0
MAX_STEPS_PER_TRIAL = 1_000_000
MAX_COMPUTE_EPOCHS = 100_000.0
MAX_NAME_CHARS = 100
MAX_DATASET_CHARS = 1024
MAX_IGNORED_LAYERS = 1024
MAX_LAYER_NAME_CHARS = 256
MAX_SCHEDULE_STEPS = 1000
