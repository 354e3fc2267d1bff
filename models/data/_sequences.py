"""Sequence data: a (T, F) input read as a one-channel T×F image, row by row.

A sequence data set goes through the image pipeline unchanged, as grey images of T rows
and F columns (one channel, so one mean and std), and each batch drops the channel axis:
row t of the image is time step t. ``digits_seq`` is scikit-learn's 8×8 digits (T=8,
F=8), ``fashion_mnist_seq`` Fashion-MNIST's 28×28 images (T=28, F=28), and an ``.npz``
of (N, T, F) arrays is already such a grey image stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from models.data._split import Batch, BatchSource, DataSplits, IndexedSource, batch_indices

__all__ = [
    "IndexedSequenceSplit",
    "SequenceSplit",
    "as_sequences",
    "image_shape_of",
    "sequence_split",
]


def image_shape_of(sequence_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return the (1, T, F) image shape that carries sequences of ``(T, F)``."""
    steps, features = sequence_shape
    return 1, steps, features


class SequenceSplit:
    """A split of one-channel images served as (B, T, F) sequences, in the image split's
    batch order. Use :func:`sequence_split`, which serves by index where the images do.

    Args:
        images: a split yielding (B, 1, T, F) model inputs.
    """

    def __init__(self, images: BatchSource) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` with inputs (B, T, F); as :class:`BatchSource`."""
        for x, y in self.images.batches(batch_size, shuffle=shuffle, seed=seed, limit=limit):
            yield x[:, 0], y


class IndexedSequenceSplit(SequenceSplit):
    """A :class:`SequenceSplit` of an image split that serves samples by index: itself an
    :class:`IndexedSource`, its batches are :meth:`batch_at` of :func:`batch_indices`.

    Args:
        images: an indexed split yielding (B, 1, T, F) model inputs.
    """

    def __init__(self, images: IndexedSource) -> None:
        super().__init__(images)
        self.indexed = images

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]:
        """Yield ``(inputs, labels)`` with inputs (B, T, F), in :func:`batch_indices` order."""
        for index in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, limit=limit):
            yield self.batch_at(index)

    def batch_at(self, index: torch.Tensor) -> Batch:
        """Return the samples at ``index`` as (B, T, F) sequences."""
        x, y = self.indexed.batch_at(index)
        return x[:, 0], y


def sequence_split(images: BatchSource) -> SequenceSplit:
    """Return ``images`` served as sequences: an :class:`IndexedSequenceSplit` where the
    image split serves samples by index (the bundled splits do), else a
    :class:`SequenceSplit`."""
    if isinstance(images, IndexedSource):
        return IndexedSequenceSplit(images)
    return SequenceSplit(images)


def as_sequences(splits: DataSplits) -> DataSplits:
    """Return ``splits`` of (1, T, F) images as splits of (T, F) sequences.

    Args:
        splits: splits built for one-channel inputs of shape (1, T, F).

    Returns:
        The same samples, split and normalization, with batches of shape (B, T, F) and
        ``input_shape`` (T, F).
    """
    return dataclasses.replace(
        splits,
        train=sequence_split(splits.train),
        val=sequence_split(splits.val),
        test=sequence_split(splits.test),
        input_shape=tuple(splits.input_shape[1:]),
    )
