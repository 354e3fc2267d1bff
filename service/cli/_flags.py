"""Job-spec fields as the CLI's flags: error messages name what the user typed.

Errors from :mod:`models` and :mod:`search` name the spec fields they are about
(``budget.flops``) and list them in ``exc.fields``; the API shows those messages as they
are. The CLI rewrites each listed field into its flag (``--flops``) through the one table
below, but only where the command that ran has that flag: ``submit --spec FILE`` users
wrote spec fields, and a command without ``--round-to`` must not suggest it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "SPEC_FLAGS",
    "arch_from",
    "cli_text",
    "flag_for",
    "spec_from",
    "user_message",
    "validation_message",
    "with_flags",
]

SPEC_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "arch": "--arch",
        "num_classes": "--num-classes",
        "input_shape": "--input-shape",
        "dataset": "--dataset",
        "data_root": "--data-root",
        "objective": "--objective",
        "budget.flops": "--flops",
        "budget.macs": "--macs",
        "budget.params": "--params",
        "budget.latency_ms": "--latency-ms",
        "budget.max_accuracy_drop": "--max-accuracy-drop",
        "search.trials": "--trials",
        "search.compute_epochs": "--compute-epochs",
        "search.sampler": "--sampler",
        "search.seed": "--seed",
        "search.timeout_s": "--timeout",
        "finetune.epochs_per_trial": "--epochs-per-trial",
        "finetune.steps_per_trial": "--steps-per-trial",
        "finetune.final_epochs": "--final-epochs",
        "finetune.lr": "--lr",
        "finetune.batch_size": "--batch-size",
        "finetune.distill": "--distill",
        "finetune.distill_weight": "--distill-weight",
        "finetune.distill_temperature": "--distill-temperature",
        "pruning.criterion": "--criterion",
        "pruning.round_to": "--round-to",
        "pruning.schedule": "--schedule",
        "pruning.schedule_steps": "--schedule-steps",
        "pruning.criteria": "--criteria",
        "pruning.sequence": "--sequence",
        "pruning.depth": "--depth",
        "latency.backend": "--latency-backend",
        "latency.threads": "--latency-threads",
        "latency.target": "--latency-target",
    }
)
"""Spec field (dotted path, as in the job spec JSON) → the CLI flag that sets it."""


def flag_for(field: str, args: argparse.Namespace | None = None) -> str | None:
    """Return the flag that sets ``field``, or None.

    Args:
        field: a dotted spec path such as ``budget.flops``.
        args: the parsed command line; when given, a flag the command does not have
            counts as none.
    """
    flag = SPEC_FLAGS.get(field)
    if flag is None or args is None:
        return flag
    return flag if hasattr(args, flag.removeprefix("--").replace("-", "_")) else None


def with_flags(message: str, fields: Iterable[str], args: argparse.Namespace | None = None) -> str:
    """Return ``message`` with each of ``fields`` it names replaced by its flag.

    A field is replaced only where it stands as a whole name (``budget.flops``, not
    ``budget.flops_x``), and only if :func:`flag_for` finds a flag for it.
    """
    for field in sorted(set(fields), key=len, reverse=True):
        flag = flag_for(field, args)
        if flag is not None:
            message = re.sub(rf"(?<![\w.]){re.escape(field)}(?!\w)", flag, message)
    return message


def user_message(exc: BaseException, args: argparse.Namespace | None = None) -> str:
    """Return the error's message for the CLI: the fields it lists named as flags."""
    return with_flags(str(exc), getattr(exc, "fields", ()), args)


_DOTTED_FIELDS = tuple(field for field in SPEC_FLAGS if "." in field)


def cli_text(text: str, args: argparse.Namespace | None = None) -> str:
    """Return a message that carries no field list (a report's warning) naming flags.

    Only dotted spec paths (``finetune.final_epochs``) are recognised in free text: a
    bare word such as ``dataset`` is too often just a word.
    """
    return with_flags(text, _DOTTED_FIELDS, args)


def validation_message(exc: ValidationError, args: argparse.Namespace | None = None) -> str:
    """Return pydantic's errors of a job spec as one line, naming the CLI's flags.

    Each problem reads ``--flops: Input should be ...``; a problem of the whole spec
    (no location) keeps its text, with the dotted fields it names turned into flags.
    A location without a flag keeps its spec path (``pruning.sequence.0.criterion``).

    Args:
        exc: the error of ``JobSpec.model_validate``.
        args: the parsed command line; only flags it has are named.
    """
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        message = cli_text(message, args)
        if where:
            lines.append(f"{flag_for(where, args) or where}: {message}")
        else:
            lines.append(message)
    return "; ".join(lines)


def arch_from(args: argparse.Namespace) -> str:
    """Return ``--arch``, else the architecture a ``--weights`` checkpoint names.

    Raises:
        SpecError: neither says one.
    """
    from models.io import read_checkpoint_info
    from search.errors import SpecError

    arch: str | None = args.arch
    if arch is None and getattr(args, "weights", None):
        arch = read_checkpoint_info(args.weights).arch
    if arch is None:
        raise SpecError("--arch is required unless --weights is a checkpoint from `train`")
    return arch


def spec_from(data: dict[str, Any], args: argparse.Namespace) -> Any:
    """Return the :class:`search.spec.JobSpec` of ``data``, a problem named by its flag.

    Raises:
        SpecError: the spec is invalid; the message names the flags of ``args``.
    """
    from pydantic import ValidationError

    from search.errors import SpecError
    from search.spec import JobSpec

    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, args)) from None
