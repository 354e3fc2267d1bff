"""The architecture registry: name → builder, plus entry-point plugins."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from torch import nn

from models.errors import ModelsError, UnknownArchitectureError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "inferprune.models"

InputShape = tuple[int, ...]
"""One input's shape without the batch: (C, H, W) for images, (T, F) for sequences."""
Builder = Callable[[int, InputShape], nn.Module]
"""``builder(num_classes, input_shape) -> nn.Module``; input_shape has the arch's rank."""

INPUT_RANKS = (2, 3)
"""The ranks an input shape may have: 3 for images (C, H, W), 2 for sequences (T, F)."""


@dataclass(frozen=True)
class Architecture:
    """One entry of the zoo.

    Attributes:
        name: the registry name users pass as ``--arch``.
        build: ``build(num_classes, input_shape)`` returning a freshly initialised model.
        family: where it comes from: ``cifar``, ``small``, ``torchvision`` or ``plugin``.
        default_input_shape: the input shape the architecture was designed for:
            (C, H, W), or (T, F) for a sequence model.
        default_num_classes: classes of the data set it is usually trained on.
        min_spatial: the smallest H and W the network accepts (images only).
        input_rank: 3 for images (C, H, W), 2 for sequences (T time steps of F features);
            ``build_model`` refuses a shape of another rank.
    """

    name: str
    build: Builder
    family: str
    default_input_shape: InputShape
    default_num_classes: int
    min_spatial: int = 1
    input_rank: int = 3


_REGISTRY: dict[str, Architecture] = {}
_plugins_loaded = False

Resolver = Callable[[str], "Architecture | None"]
"""``resolver(name)`` → the architecture a parametrized name stands for, or None."""

_RESOLVERS: list[Resolver] = []


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` to the zoo and return it.

    Raises:
        ModelsError: another architecture already uses the name.
    """
    if arch.name in _REGISTRY:
        raise ModelsError(f"architecture {arch.name!r} is registered twice")
    _REGISTRY[arch.name] = arch
    return arch


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            logger.warning("plugin architecture %r shadows a built-in one; ignored", ep.name)
            continue
        try:
            loaded = ep.load()
        except Exception:  # a broken plugin must not take the zoo down
            logger.exception("could not load model plugin %r", ep.name)
            continue
        if isinstance(loaded, Architecture):
            _REGISTRY[ep.name] = loaded
        else:
            _REGISTRY[ep.name] = Architecture(
                name=ep.name,
                build=loaded,
                family="plugin",
                default_input_shape=(3, 224, 224),
                default_num_classes=1000,
            )


def register_resolver(resolver: Resolver) -> Resolver:
    """Let :func:`get_architecture` resolve a family of parametrized names (such as
    ``lstm_classifier_2x100``) that cannot all be registered; return ``resolver``."""
    _RESOLVERS.append(resolver)
    return resolver


def get_architecture(name: str) -> Architecture:
    """Return the zoo entry called ``name``: a registered one, or one a resolver builds
    for a parametrized name (registered on first use).

    Raises:
        UnknownArchitectureError: no such name; the error lists the closest names.
    """
    _load_plugins()
    if name not in _REGISTRY:
        for resolver in _RESOLVERS:
            found = resolver(name)
            if found is not None:
                return register(found)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(name, _close_names(name, list(_REGISTRY))) from None


def _close_names(name: str, names: list[str], n: int = 4, cutoff: float = 0.6) -> list[str]:
    """Return up to ``n`` of ``names`` that ``name`` was probably meant to be, best first.

    A registry name is compared whole and by its stem before the first ``_`` (so
    ``resnt20`` finds ``resnet20_cifar``); a name of the same family with a depth
    (``resnet19``) ranks the nearest depths first (``resnet18``, ``resnet20_cifar``).
    """
    query = name.lower()
    scored = [(_likeness(query, candidate), candidate) for candidate in names]
    ranked = sorted((s for s in scored if s[0] >= cutoff), key=lambda s: (-s[0], s[1]))
    return [candidate for _, candidate in ranked[:n]]


_FAMILY_DEPTH = re.compile(r"([a-z]+)(\d+)")


def _likeness(query: str, candidate: str) -> float:
    stem = candidate.lower().split("_", 1)[0]
    similarity = max(
        difflib.SequenceMatcher(None, query, candidate.lower()).ratio(),
        difflib.SequenceMatcher(None, query, stem).ratio(),
    )
    asked, offered = _FAMILY_DEPTH.fullmatch(query), _FAMILY_DEPTH.fullmatch(stem)
    if asked and offered and asked[1] == offered[1]:
        # same family, another depth: a nearer depth is the likelier meaning
        a, b = int(asked[2]), int(offered[2])
        similarity = max(similarity, 0.8 + 0.2 * (1 - abs(a - b) / max(a, b, 1)))
    return similarity


def list_architectures() -> list[Architecture]:
    """Return every architecture in the zoo, sorted by family then name."""
    _load_plugins()
    return sorted(_REGISTRY.values(), key=lambda a: (a.family, a.name))


def build_model(
    name: str,
    num_classes: int | None = None,
    input_shape: InputShape | None = None,
) -> nn.Module:
    """Build a freshly initialised model of architecture ``name`` in eval mode.

    Args:
        name: registry name, e.g. ``resnet20_cifar`` or ``resnet18``.
        num_classes: size of the classifier output; the architecture's default if None.
        input_shape: (C, H, W) of one input, or (T, F) for a sequence architecture; the
            architecture's default if None.

    Returns:
        The model, on the CPU, in eval mode.

    Raises:
        UnknownArchitectureError: ``name`` is not in the zoo.
        ModelsError: ``num_classes`` or ``input_shape`` cannot work for this architecture.
    """
    arch = get_architecture(name)
    classes = arch.default_num_classes if num_classes is None else int(num_classes)
    shape = arch.default_input_shape if input_shape is None else normalize_shape(input_shape)
    if classes < 1:
        raise ModelsError(f"num_classes must be at least 1, got {classes}")
    if len(shape) != arch.input_rank:
        expected = "T,F (time steps, features)" if arch.input_rank == 2 else "C,H,W"
        raise ModelsError(
            f"{name} takes an input_shape of {expected}, got {','.join(map(str, shape))}",
            fields=("input_shape",),
        )
    if arch.input_rank == 3 and min(shape[1:]) < arch.min_spatial:
        raise ModelsError(
            f"{name} needs inputs of at least {arch.min_spatial}x{arch.min_spatial} pixels, "
            f"got {shape[1]}x{shape[2]}; pass a larger input_shape",
            fields=("input_shape",),
        )
    model = arch.build(classes, shape)
    return model.eval()


def normalize_shape(
    shape: tuple[int, ...] | list[int] | str, rank: int | None = None
) -> InputShape:
    """Return ``shape`` as a tuple of positive ints: (C, H, W) or, for sequences, (T, F).

    Accepts a sequence or a string such as ``"3,32,32"`` or ``"8,8"``.

    Args:
        shape: the shape to read.
        rank: the number of dimensions required; any of :data:`INPUT_RANKS` if None.

    Returns:
        The shape as a tuple of ints.

    Raises:
        ModelsError: not integers, not positive, or not of the required rank.
    """
    ranks = INPUT_RANKS if rank is None else (rank,)
    wanted = " or ".join({2: "T,F", 3: "C,H,W"}.get(r, f"{r} integers") for r in ranks)
    values: list[int]
    try:
        if isinstance(shape, str):
            values = [int(v) for v in shape.replace("x", ",").split(",") if v.strip()]
        else:
            values = [int(v) for v in shape]
    except ValueError:
        raise ModelsError(f"input shape must be {wanted} (integers), got {shape!r}") from None
    if len(values) not in ranks or min(values) < 1:
        raise ModelsError(f"input shape must be positive integers {wanted}, got {shape!r}")
    return tuple(values)
