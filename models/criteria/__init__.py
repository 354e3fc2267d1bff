"""How important each channel is: the pruning criteria.

Every criterion is a Torch-Pruning ``Importance`` (ours subclass :class:`Criterion`):
given a dependency group it returns one score per channel, higher meaning keep. The
ones Torch-Pruning has are used as they are; activation statistics, the hybrid and a
seeded random baseline are written here.

=================  ====================================================  ===========
name               what it measures                                      needs data
=================  ====================================================  ===========
l1                 L1 norm of the group's filters                         no
l2                 L2 norm of the group's filters                         no
fpgm               distance to the other filters (geometric median)       no
hybrid             L2 saliency discounted by similarity to stronger ones  no
random             seeded uniform scores (baseline)                       no
taylor             |w · dL/dw| on calibration batches (first order)       yes
activation_mean    mean |activation| of the channel's maps                yes
activation_l2      L2 norm of the channel's activation maps               yes
apoz               share of non-zero activations (1 − APoZ)               yes
=================  ====================================================  ===========
"""

from __future__ import annotations

from models.criteria._activation import ActivationStatistic
from models.criteria._base import Batch, Calibration, Criterion, as_batches
from models.criteria._hybrid import Hybrid
from models.criteria._magnitude import SeededRandom, fpgm, l1, l2
from models.criteria._taylor import Taylor
from models.errors import ModelsError
from models.names import CRITERION_NAMES, DATA_CRITERIA

__all__ = [
    "CRITERIA",
    "DATA_CRITERIA",
    "Batch",
    "Calibration",
    "Criterion",
    "as_batches",
    "make_criterion",
]

CRITERIA: tuple[str, ...] = CRITERION_NAMES
"""Every criterion name, weight-only ones first (defined in :mod:`models.names`)."""


def make_criterion(name: str, seed: int = 0) -> Criterion:
    """Return a fresh criterion object for ``name``.

    Args:
        name: one of :data:`CRITERIA`.
        seed: seeds the ``random`` criterion; ignored by the others.

    Raises:
        ModelsError: unknown name (the message lists the known ones).
    """
    factories = {
        "l1": l1,
        "l2": l2,
        "fpgm": fpgm,
        "hybrid": Hybrid,
        "random": lambda: SeededRandom(seed),
        "taylor": Taylor,
        "activation_mean": lambda: ActivationStatistic("mean"),
        "activation_l2": lambda: ActivationStatistic("l2"),
        "apoz": lambda: ActivationStatistic("apoz"),
    }
    try:
        factory = factories[name]
    except KeyError:
        raise ModelsError(
            f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}"
        ) from None
    return factory()
