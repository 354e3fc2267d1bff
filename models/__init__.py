"""What a network is, and how to change and measure it (torch only).

Subpackages: :mod:`models.zoo` (architectures), :mod:`models.io` (weights in,
checkpoints and exports out), :mod:`models.prune` (groups and plans),
:mod:`models.criteria` (channel importance), :mod:`models.schedules` (how pruning
happens over a fine-tune), :mod:`models.cost` (MACs, parameters, size, latency),
:mod:`models.data` (data sets and splits), :mod:`models.train` (fine-tuning and
evaluation).
"""

from models.errors import (
    DataError,
    ExportError,
    ModelsError,
    PlanError,
    TrainingDivergedError,
    UnknownArchitectureError,
    UnsafeFileError,
    WeightsError,
)

__all__ = [
    "DataError",
    "ExportError",
    "ModelsError",
    "PlanError",
    "TrainingDivergedError",
    "UnknownArchitectureError",
    "UnsafeFileError",
    "WeightsError",
]
