"""Argument groups several commands share, and turning them into objects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from models.names import CRITERION_NAMES, DATA_CRITERIA, DATASET_NAMES, SCHEDULE_NAMES


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def input_shape_argument(text: str) -> tuple[int, ...]:
    """argparse type: ``C,H,W`` (an image model) or ``T,F`` (a sequence model) as positive
    integers; whether the rank fits the architecture is the job spec's to say."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers C,H,W (images, e.g. 3,32,32) or T,F (sequences, "
            f"e.g. 8,8), got {text!r}"
        )
    return tuple(values)


INPUT_SHAPE_HELP = (
    "one input: C,H,W for an image model (e.g. 3,32,32), T,F (time steps, features) for "
    "a sequence model (e.g. 8,8)"
)


def add_model_arguments(parser: argparse.ArgumentParser, *, arch_required: bool) -> None:
    """Add --arch, --num-classes and --input-shape."""
    parser.add_argument(
        "--arch",
        required=arch_required,
        metavar="A",
        help="architecture name, e.g. resnet20_cifar, resnet18, mobilenet_v2 "
        "(`inferprune groups --list` shows them all)",
    )
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        metavar="N",
        help="classifier outputs (default: the data set's, else the architecture's)",
    )
    parser.add_argument(
        "--input-shape",
        type=input_shape_argument,
        metavar="C,H,W|T,F",
        help=f"{INPUT_SHAPE_HELP} (default: the architecture's)",
    )


def dataset_names_help(root: str = "--data-root") -> str:
    """Return the built-in data set names for a --help text (from :mod:`models.names`)."""
    bundled = ("digits", "digits_seq", "synthetic")
    local = ", ".join(n for n in DATASET_NAMES if n not in bundled)
    return f"digits, digits_seq (bundled, offline), synthetic, {local} (from {root})"


def add_criterion_argument(parser: Any, *, default: str | None = "l1") -> None:
    """Add --criterion, choosing from :mod:`models.names` (the one list of criteria)."""
    needs_data = ", ".join(n for n in CRITERION_NAMES if n in DATA_CRITERIA)
    parser.add_argument(
        "--criterion",
        default=default,
        choices=CRITERION_NAMES,
        metavar="C",
        help=f"which channels go first: {', '.join(CRITERION_NAMES)}"
        + (f" (default: {default})" if default else "")
        + f"; {needs_data} score channels on calibration batches of the data set",
    )


def criteria_list(text: str) -> tuple[str, ...]:
    """argparse type: criteria separated by commas, each a :mod:`models.names` criterion."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in CRITERION_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(text)}: expected criteria such as taylor,fpgm "
            f"from {', '.join(CRITERION_NAMES)}"
        )
    return names


def add_schedule_arguments(parser: Any, *, default: str | None = "one_shot") -> None:
    """Add --schedule, --schedule-steps and --criteria (the schedules of
    :mod:`models.schedules`, named in :mod:`models.names`)."""
    parser.add_argument(
        "--schedule",
        default=default,
        choices=SCHEDULE_NAMES,
        metavar="NAME",
        help="how the plan is reached over the fine-tune: "
        + ", ".join(SCHEDULE_NAMES)
        + (f" (default: {default})" if default else "")
        + "; every schedule ends at the plan's widths",
    )
    parser.add_argument(
        "--schedule-steps",
        type=positive_int,
        metavar="N",
        help="pruning steps of the schedule (default: iterative 3, dropnet 5, others 10)",
    )
    parser.add_argument(
        "--criteria",
        type=criteria_list,
        metavar="C1,C2",
        help="iterative only: one criterion per phase of its steps, e.g. taylor,fpgm "
        "(saliency first, then similarity)",
    )


def add_depth_argument(parser: Any) -> None:
    """Add --depth / --no-depth (``pruning.depth``; default None: the spec's own rule)."""
    parser.add_argument(
        "--depth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also search how many residual blocks of each stage to remove whole (default: "
        "yes with the one_shot schedule and no sequence; --no-depth: "
        "widths only)",
    )


def add_distill_argument(parser: Any) -> None:
    """Add --distill / --no-distill (``finetune.distill``; default None: with
    ``--compute-epochs``) and the distillation loss's --distill-weight and
    --distill-temperature (default None: the spec's)."""
    parser.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="distill the unpruned model into the candidates and the chosen one (default: "
        "yes with --compute-epochs, whose jobs compute its logits once; --no-distill: "
        "labels only)",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        metavar="W",
        help="share of the distillation term in the loss, 0 to 1 (default 0.5): "
        "(1 - W) * cross-entropy + W * T^2 * KL(teacher, student)",
    )
    parser.add_argument(
        "--distill-temperature",
        type=float,
        metavar="T",
        help="softening temperature of the distillation term (default 4)",
    )


def add_sequence_argument(parser: Any, *, search: bool) -> None:
    """Add --sequence FILE, a hybrid sequence of pruning steps (``pruning.sequence``);
    ``search`` words its help for a search, whose widths stand for the channel steps."""
    example = (
        '[{"granularity": "channel", "criterion": "l1", "amount": 0.3}, '
        '{"granularity": "kernel", "criterion": "fpgm", "amount": 0.5}]'
    )
    role = (
        "the searched widths are the channel step, the kernel or weight steps then prune "
        "every candidate at once"
        if search
        else "alone, every step runs; beside --plan or --ratio, those widths stand for "
        "the channel steps"
    )
    gradual = (
        ""
        if search
        else " Weight steps are gradual (AGP): with --finetune-epochs they come last and "
        "their sparsity rises along a cubic over the first half of the fine-tune, "
        "without it they apply at once."
    )
    parser.add_argument(
        "--sequence",
        type=Path,
        metavar="SEQ.json",
        help=f"hybrid pruning steps, e.g. {example}; {role}. Kernel steps (convolutional "
        "models) zero k×k kernels; weight steps (recurrent models, e.g. "
        '{"granularity": "weight", "criterion": "l1", "amount": 0.8}) zero that share '
        "of every LSTM/GRU input-to-hidden and hidden-to-hidden matrix, smallest "
        f"magnitude first, and the zeros stay zero while it trains.{gradual} Non-zero "
        "params and effective MACs are reported beside dense MACs, which (with "
        "latency) drop only where whole channels go",
    )


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add --dataset and --data-root."""
    parser.add_argument(
        "--dataset",
        required=required,
        metavar="D",
        help=f"{dataset_names_help()}, imagefolder:DIR, or a .npz file",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="where cifar10/mnist/... files live (default: $INFERPRUNE_DATA_ROOT or "
        "~/.cache/inferprune/data); nothing is ever downloaded",
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """Add --json."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of tables"
    )


def input_shape(args: argparse.Namespace) -> tuple[int, ...] | None:
    """Return ``--input-shape`` (parsed by :func:`input_shape_argument`), or None."""
    return tuple(args.input_shape) if args.input_shape else None


def add_device_argument(parser: argparse.ArgumentParser, *, what: str) -> None:
    """Add ``--device`` (read by :func:`models.device.resolve_device`)."""
    parser.add_argument(
        "--device",
        metavar="D",
        help=f"where {what}: auto (a GPU when torch sees one), cpu, cuda, cuda:N or mps "
        "(default: $INFERPRUNE_DEVICE or auto)",
    )
