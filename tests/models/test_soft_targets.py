"""Distilling from the teacher's logits computed once (SoftTargets) instead of live."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from models.data import InputSplit, batch_indices
from models.data._sequences import IndexedSequenceSplit, sequence_split
from models.data._split import Batch, IndexedSource
from models.train import SoftTargets, fine_tune
from tests.models.test_train import quadrant_split, tiny_cnn


class CountingTeacher(nn.Module):
    """Wraps a model and counts the samples it was asked about."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += len(x)
        return self.inner(x)


class Unindexed:
    """A split that serves batches but not samples by index (a user's own source)."""

    def __init__(self, inner: InputSplit) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
    ) -> Iterator[Batch]:
        return self.inner.batches(batch_size, shuffle=shuffle, seed=seed, limit=limit)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    model = tiny_cnn(seed=3)
    fine_tune(model, quadrant_split(256, seed=4), epochs=2, lr=0.05)
    return model


def test_soft_targets_are_the_teachers_logits_beside_the_splits_own_batches(
    teacher: nn.Module,
) -> None:
    split = quadrant_split(200, seed=5)
    targets = SoftTargets.of(teacher, split, batch_size=64)
    assert targets is not None and targets.logits.shape == (200, 4)
    plain = list(split.batches(32, shuffle=True, seed=9, limit=4))
    kept = list(targets.batches(32, shuffle=True, seed=9, limit=4))
    assert len(kept) == 4
    for (x, y), (kx, ky, logits) in zip(plain, kept, strict=True):
        assert torch.equal(x, kx) and torch.equal(y, ky)
        with torch.no_grad():
            torch.testing.assert_close(logits, teacher(x), rtol=1e-5, atol=1e-5)


def test_the_batch_order_is_the_one_batch_indices_gives() -> None:
    inputs, labels = torch.randn(10, 3), torch.arange(10)
    split = InputSplit(inputs, labels)
    order = list(batch_indices(10, 4, shuffle=True, seed=2))
    assert [len(i) for i in order] == [4, 4, 2]
    served = [y for _, y in split.batches(4, shuffle=True, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip(order, served, strict=True))
    images = quadrant_split(6, seed=1)
    sequences = sequence_split(images)
    assert isinstance(sequences, IndexedSequenceSplit)
    x, y = sequences.batch_at(torch.tensor([4, 1]))
    assert x.shape == (2, 8, 8) and len(y) == 2
    for (sx, sy), (ix, iy) in zip(
        sequences.batches(4, shuffle=True, seed=3),
        images.batches(4, shuffle=True, seed=3),
        strict=True,
    ):  # the same samples in the same order as the image split's, one channel dropped
        assert torch.equal(sx, ix[:, 0]) and torch.equal(sy, iy)


def test_a_fine_tune_from_soft_targets_trains_as_one_with_the_live_teacher(
    teacher: nn.Module,
) -> None:
    split = quadrant_split(256, seed=6)
    counting = CountingTeacher(teacher)
    live, cached = tiny_cnn(seed=8), tiny_cnn(seed=8)
    fine_tune(live, split, epochs=3, teacher=counting, seed=1)
    assert counting.samples == 3 * 256  # a teacher pass per step
    counting.samples = 0
    targets = SoftTargets.of(counting, split)
    assert targets is not None and counting.samples == 256  # one pass over the split
    fine_tune(cached, split, epochs=3, teacher=targets, seed=1)
    assert counting.samples == 256  # and none while training
    for a, b in zip(live.state_dict().values(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-4)
    plain = tiny_cnn(seed=8)
    fine_tune(plain, split, epochs=3, seed=1)
    assert not torch.allclose(plain[0].weight, cached[0].weight, atol=1e-4)  # it distilled


def test_soft_targets_of_another_split_are_refused(teacher: nn.Module) -> None:
    targets = SoftTargets.of(teacher, quadrant_split(64, seed=1))
    assert targets is not None
    with pytest.raises(ValueError, match="another split"):
        fine_tune(tiny_cnn(), quadrant_split(64, seed=1), steps=1, teacher=targets)


def test_the_live_teacher_stays_where_the_logits_cannot_be_kept(teacher: nn.Module) -> None:
    split = quadrant_split(64, seed=1)
    assert SoftTargets.of(teacher, split, max_bytes=64 * 4 * 4 - 1) is None  # too many
    assert SoftTargets.of(teacher, split, max_bytes=64 * 4 * 4) is not None
    plain = InputSplit(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    assert SoftTargets.of(teacher, Unindexed(plain)) is None  # no samples by index
    sequences = sequence_split(Unindexed(plain))
    assert not isinstance(sequences, IndexedSource)  # nor do its sequences
    assert SoftTargets.of(teacher, sequences) is None
