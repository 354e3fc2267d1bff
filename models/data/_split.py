"""Tensor-backed data splits that yield model-ready batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch.nn import functional as F

__all__ = [
    "BatchSource",
    "DataSplits",
    "IndexedSource",
    "Normalization",
    "TensorSplit",
    "batch_indices",
]

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class BatchSource(Protocol):
    """Anything that yields ``(inputs, labels)`` batches: a split of a data set.

    ``inputs`` are float32 of shape (B, C, H, W), or (B, T, F) for a sequence model,
    already resized and normalized for the model; ``labels`` are int64 class indices of
    shape (B,). The same arguments give the same batches in the same order.
    """

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]: ...


@runtime_checkable
class IndexedSource(BatchSource, Protocol):
    """A :class:`BatchSource` that also serves any samples by index, in the order of
    :func:`batch_indices`: ``batches(...)`` yields ``batch_at(i)`` for each ``i`` that
    ``batch_indices(len(self), ...)`` yields. Whatever is kept per sample (a teacher's
    logits, :class:`models.train.SoftTargets`) lines up with its batches."""

    def batch_at(self, index: torch.Tensor) -> Batch: ...


def batch_indices(
    n: int, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
) -> Iterator[torch.Tensor]:
    """Yield the sample indices of each batch of a split of ``n`` samples: in order, or
    permuted reproducibly by ``seed``; the last batch may be smaller; at most ``limit``
    batches. The one place the bundled splits order their batches.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for count, start in enumerate(range(0, n, batch_size)):
        if limit is not None and count >= limit:
            return
        yield order[start : start + batch_size]


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` applied after scaling pixels to [0, 1].

    Exported models expect inputs normalized this way; checkpoints record it.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` (B, C, H, W) normalized."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


class TensorSplit:
    """A split held in memory as a uint8 or float tensor at its native resolution.

    Images are stored as (N, C, H, W) in [0, 1] (float) or [0, 255] (uint8) and are
    converted per batch: channels adapted (grey repeated to RGB, RGB averaged to grey),
    resized to ``input_shape`` with bilinear interpolation, then normalized.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        input_shape: Sequence[int],
        normalization: Normalization | None = None,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.input_shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.normalization = normalization

    def __len__(self) -> int:
        return len(self.labels)

    def to_model_input(self, images: torch.Tensor) -> torch.Tensor:
        """Return raw images (B, C, H, W) as float model inputs of ``input_shape``."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        channels, height, width = self.input_shape
        if x.shape[1] != channels:
            if x.shape[1] == 1:
                x = x.expand(-1, channels, -1, -1)
            elif channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(
                    f"cannot turn {x.shape[1]}-channel images into {channels}-channel inputs"
                )
        if x.shape[2:] != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        if self.normalization is not None:
            x = self.normalization.apply(x)
        return x.contiguous()

    def batch_at(self, index: torch.Tensor) -> Batch:
        """Return the samples at ``index`` as one ``(inputs, labels)`` batch."""
        return self.to_model_input(self.images[index]), self.labels[index]

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` batches, shuffled with ``seed`` if asked.

        Args:
            batch_size: samples per batch (the last batch may be smaller).
            shuffle: permute the samples first, reproducibly for a given ``seed``.
            seed: seeds the permutation.
            limit: stop after this many batches.
        """
        for index in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, limit=limit):
            yield self.batch_at(index)


@dataclass(frozen=True)
class DataSplits:
    """A data set split into train / val / test, ready for one model's input shape.

    ``val`` is what the search chooses on; ``test`` is never looked at until the final
    report.
    """

    name: str
    train: BatchSource
    val: BatchSource
    test: BatchSource
    num_classes: int
    input_shape: tuple[int, ...]
    normalization: Normalization | None = None
    class_names: tuple[str, ...] = field(default=())
