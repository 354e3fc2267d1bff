"""A seeded, quickly learnable synthetic data set for tests and demos.

Each class is a stripe texture with its own orientation, frequency and colour; every
sample shifts it by up to a pixel and adds Gaussian noise. At its native size (3x16x16
by default, or 1x8x8 after resizing) the zoo's ``tiny_cnn`` typically reaches >95% test
accuracy in two epochs of SGD; much larger resized inputs blur the stripes and take a
few more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from models.data._source import DatasetInfo, InputShape, LabelledImages, RawData
from models.errors import DataError

__all__ = ["SyntheticSpec", "inspect_synthetic", "load_synthetic", "parse_synthetic"]

_MAX_VALUES = 2**27  # 512 MiB of float32: a spec arriving over HTTP must not exhaust memory


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of ``synthetic:classes=4,samples=256,size=16`` (all optional)."""

    classes: int = 10
    samples: int = 600
    size: int = 16
    channels: int = 3
    noise: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        limits: dict[str, tuple[float, float]] = {
            "classes": (2, 100),
            "samples": (4, 1_000_000),
            "size": (4, 256),
            "channels": (1, 3),
            "noise": (0.0, 1.0),
            "seed": (0, 2**32 - 1),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise DataError(f"synthetic {name}={value} is outside [{low}, {high}]")
        if self.channels == 2:
            raise DataError("synthetic channels must be 1 or 3")
        values = self.samples * self.channels * self.size**2
        if values > _MAX_VALUES:
            raise DataError(
                f"synthetic data of {self.samples} samples of {self.channels}x{self.size}x"
                f"{self.size} is too large ({values:,} values, at most {_MAX_VALUES:,})"
            )
        if self.samples < 2 * self.classes:
            raise DataError(
                f"synthetic samples={self.samples} is too few for {self.classes} classes; "
                f"use at least {2 * self.classes}"
            )


def parse_synthetic(arg: str) -> SyntheticSpec:
    """Return the spec written as ``key=value,...`` after ``synthetic:``.

    Raises:
        DataError: an unknown key or a value of the wrong type or range.
    """
    types = {f.name: (float if f.name == "noise" else int) for f in fields(SyntheticSpec)}
    values: dict[str, float | int] = {}
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise DataError(
                f"synthetic option {item!r} is not key=value with key one of "
                f"{', '.join(types)} (e.g. synthetic:classes=4,samples=256,size=16)"
            )
        try:
            values[key] = types[key](text.strip())
        except ValueError as exc:
            kind = types[key].__name__
            raise DataError(f"synthetic {key}={text!r} is not a valid {kind}") from exc
    return SyntheticSpec(**values)  # type: ignore[arg-type]


def _prototypes(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Return one (C, S, S) noise-free texture per class, values in [0, 1]."""
    angles = max(4, math.ceil(spec.classes / 3))
    yy, xx = np.mgrid[0 : spec.size, 0 : spec.size].astype(np.float64) / spec.size
    protos = np.empty((spec.classes, spec.channels, spec.size, spec.size), np.float32)
    colours = rng.uniform(0.35, 1.0, size=(spec.classes, spec.channels))
    for k in range(spec.classes):
        theta = math.pi * (k % angles) / angles
        cycles = 1.5 + (k // angles)  # across the image: stays below Nyquist at 8x8
        phase = 2 * math.pi * cycles * (math.cos(theta) * xx + math.sin(theta) * yy)
        wave = 0.5 + 0.5 * np.sin(phase)
        protos[k] = colours[k][:, None, None] * wave
    return protos


def load_synthetic(arg: str, root: Path, input_shape: InputShape) -> RawData:
    """Return the synthetic data set described by ``arg`` as float32 images in [0, 1].

    The samples depend only on the spec (its ``seed`` included), not on the split seed,
    so different split seeds partition the same samples.
    """
    spec = parse_synthetic(arg)
    rng = np.random.default_rng(spec.seed)
    protos = _prototypes(spec, rng)
    labels = rng.permutation(np.arange(spec.samples) % spec.classes).astype(np.int64)
    images = protos[labels]
    shifts = rng.integers(-1, 2, size=(spec.samples, 2))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[chosen] = np.roll(images[chosen], (dy, dx), axis=(2, 3))
    images += rng.normal(0.0, spec.noise, size=images.shape).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    names = tuple(f"class_{k}" for k in range(spec.classes))
    return RawData(LabelledImages(images, labels), None, None, spec.classes, names)


def inspect_synthetic(arg: str, root: Path) -> DatasetInfo:
    """Return the class and sample counts ``arg`` asks for."""
    spec = parse_synthetic(arg)
    return DatasetInfo(spec.classes, spec.samples)
