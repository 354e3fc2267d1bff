"""Schedule names → schedules: the one place a name becomes a :class:`Schedule`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from models.errors import ModelsError
from models.names import SCHEDULE_NAMES
from models.schedules._adaptive import Adaptive
from models.schedules._base import Schedule, ScheduleConfig
from models.schedules._gradual import Agp, OneCycle, WhileTraining
from models.schedules._iterative import DropNet, Iterative
from models.schedules._one_shot import OneShot

__all__ = ["SCHEDULES", "make_schedule"]


def _one_shot(config: ScheduleConfig) -> Schedule:
    if config.steps is not None:
        raise ModelsError(
            "pruning.schedule_steps: one_shot prunes once; give steps only to a "
            "schedule that prunes several times (iterative, dropnet, agp, one_cycle, "
            "while_training, adaptive)",
            fields=("pruning.schedule_steps",),
        )
    return OneShot()


def _steps(config: ScheduleConfig, default: int) -> int:
    return default if config.steps is None else config.steps


SCHEDULES: Mapping[str, Callable[[ScheduleConfig], Schedule]] = MappingProxyType(
    {
        "one_shot": _one_shot,
        "iterative": lambda c: Iterative(
            _steps(c, max(Iterative.default_steps, len(c.criteria))), c.criteria
        ),
        "dropnet": lambda c: DropNet(_steps(c, DropNet.default_steps)),
        "agp": lambda c: Agp(_steps(c, Agp.default_steps)),
        "one_cycle": lambda c: OneCycle(_steps(c, OneCycle.default_steps)),
        "while_training": lambda c: WhileTraining(_steps(c, WhileTraining.default_steps)),
        "adaptive": lambda c: Adaptive(c.max_accuracy_drop, _steps(c, Adaptive.default_steps)),
    }
)
"""Every schedule name (in the order of :data:`models.names.SCHEDULE_NAMES`) → the
factory that builds it from a :class:`ScheduleConfig`."""


def make_schedule(config: ScheduleConfig) -> Schedule:
    """Return the schedule ``config`` names, with its settings.

    Args:
        config: the name and settings.

    Returns:
        The :class:`Schedule`.

    Raises:
        ModelsError: unknown name (the message lists the known ones); a setting the
            schedule does not take (``criteria`` outside ``iterative``, steps for
            ``one_shot``) or cannot use. The message names the spec field.
    """
    factory = SCHEDULES.get(config.name)
    if factory is None:
        raise ModelsError(
            f"unknown pruning.schedule {config.name!r}; choose one of {', '.join(SCHEDULE_NAMES)}",
            fields=("pruning.schedule",),
        )
    if config.criteria and config.name != "iterative":
        raise ModelsError(
            "pruning.criteria (one criterion per phase) belongs to the iterative schedule; "
            f"{config.name} uses pruning.criterion",
            fields=("pruning.criteria", "pruning.criterion"),
        )
    return factory(config)
