"""Turn loaded arrays into deterministic train / val / test splits for one model."""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from models.data._source import InputShape, LabelledImages, RawData
from models.data._split import DataSplits, Normalization, TensorSplit
from models.errors import DataError

__all__ = ["build_splits"]

logger = logging.getLogger(__name__)

# Normalization statistics come from an evenly spaced subset of the (already shuffled)
# training images, capped by count and by values touched so that upsampling CIFAR to
# 224x224 stays cheap; a few hundred images pin down a channel's mean and std.
_STATS_MAX_SAMPLES = 4096
_STATS_MIN_SAMPLES = 256
_STATS_MAX_VALUES = 2**25
_STATS_BATCH = 256


def _carve(
    part: LabelledImages, count: int, seed: int, what: str
) -> tuple[LabelledImages, LabelledImages]:
    """Split ``count`` samples off ``part``, stratified by label when possible."""
    if count < 1 or count >= len(part) - 1:
        raise DataError(
            f"cannot carve a {what} split of {count} samples out of {len(part)}; "
            "the data set is too small for the requested fractions"
        )
    index = np.arange(len(part))
    try:
        kept, carved = train_test_split(
            index, test_size=count, random_state=seed, stratify=part.labels
        )
    except ValueError:  # a class with one sample, or fewer carved samples than classes
        kept, carved = train_test_split(index, test_size=count, random_state=seed)
    return part.take(np.sort(kept)), part.take(np.sort(carved))


def _check_channels(data_channels: int, model_channels: int, name: str) -> None:
    if data_channels != model_channels and data_channels != 1 and model_channels != 1:
        raise DataError(
            f"{name} has {data_channels}-channel images, which cannot feed a model with "
            f"{model_channels} input channels; use input channels 1 or {data_channels}"
        )


def _normalization(train: TensorSplit) -> Normalization:
    """Return the per-channel mean and std of ``train`` as the model will see it."""
    channels, height, width = train.input_shape
    budget = _STATS_MAX_VALUES // (channels * height * width)
    samples = min(_STATS_MAX_SAMPLES, max(_STATS_MIN_SAMPLES, budget))
    images = train.images[:: max(1, len(train) // samples)][:samples]
    total = torch.zeros(channels, dtype=torch.float64)
    sum_sq = torch.zeros_like(total)
    count = 0
    for start in range(0, len(images), _STATS_BATCH):
        x = train.to_model_input(images[start : start + _STATS_BATCH])
        total += x.sum((0, 2, 3), dtype=torch.float64)
        sum_sq += (x * x).sum((0, 2, 3), dtype=torch.float64)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (sum_sq / count - mean * mean).clamp_min(0.0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)  # constant channel: leave it
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


def _tensor_split(
    part: LabelledImages, input_shape: InputShape, norm: Normalization | None
) -> TensorSplit:
    # from_numpy shares the arrays' memory rather than copying them
    return TensorSplit(
        torch.from_numpy(part.images), torch.from_numpy(part.labels), input_shape, norm
    )


def build_splits(
    raw: RawData,
    *,
    name: str,
    input_shape: InputShape,
    num_classes: int | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> DataSplits:
    """Return ``raw`` split, normalized with train statistics, for ``input_shape`` models.

    Splits the source lacks are carved from its train split (test first, then val), each
    a fraction of that train split, stratified by label and fixed by ``seed``.

    Raises:
        DataError: more classes than ``num_classes``, fractions out of range, too few
            samples to split, or image channels the model cannot take.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be "
            "between 0 and 1 and sum to less than 1"
        )
    if num_classes is not None and raw.num_classes > num_classes:
        raise DataError(
            f"{name} has {raw.num_classes} classes (labels 0..{raw.num_classes - 1}) but the "
            f"model has {num_classes} outputs; use num_classes={raw.num_classes} or more"
        )
    for part in (raw.train, raw.val, raw.test):
        if part is not None:
            _check_channels(part.images.shape[1], input_shape[0], name)
    train, val, test = raw.train, raw.val, raw.test
    pool = len(train)
    if test is None:
        train, test = _carve(train, max(1, round(test_fraction * pool)), seed, "test")
    if val is None:
        train, val = _carve(train, max(1, round(val_fraction * pool)), seed, "val")
    norm = _normalization(_tensor_split(train, input_shape, None))
    splits = DataSplits(
        name=name,
        train=_tensor_split(train, input_shape, norm),
        val=_tensor_split(val, input_shape, norm),
        test=_tensor_split(test, input_shape, norm),
        num_classes=raw.num_classes,
        input_shape=input_shape,
        normalization=norm,
        class_names=raw.class_names,
    )
    logger.info(
        "data set %s: %d train, %d val, %d test samples, %d classes",
        name, len(train), len(val), len(test), raw.num_classes,
    )  # fmt: skip
    return splits
