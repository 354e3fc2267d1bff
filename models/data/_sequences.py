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

from models.data._split import Batch, BatchSource, DataSplits, IndexedSource

__all__ = ["SequenceSplit", "as_sequences", "image_shape_of"]


def image_shape_of(sequence_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return the (1, T, F) image shape that carries sequences of ``(T, F)``."""
    steps, features = sequence_shape
    return 1, steps, features


class SequenceSplit:
    """A split of one-channel images served as (B, T, F) sequences.

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

    def batch_at(self, index: torch.Tensor) -> Batch:
        """Return the samples at ``index`` as (B, T, F) sequences, when the image split
        serves samples by index (:class:`IndexedSource`; the bundled splits do).

        Raises:
            TypeError: the image split does not.
        """
        if not isinstance(self.images, IndexedSource):
            raise TypeError(f"{type(self.images).__name__} does not serve samples by index")
        x, y = self.images.batch_at(index)
        return x[:, 0], y


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
        train=SequenceSplit(splits.train),
        val=SequenceSplit(splits.val),
        test=SequenceSplit(splits.test),
        input_shape=tuple(splits.input_shape[1:]),
    )
