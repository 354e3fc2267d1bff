"""Sequence data sets: images read row by row as (T, F) sequences for recurrent models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import DATASETS, load_dataset
from models.errors import DataError
from models.train import evaluate, fine_tune
from models.zoo import build_model
from tests.models.test_data import _fake_mnist


def test_digits_seq_yields_the_digit_rows_as_time_steps() -> None:
    seq = load_dataset("digits_seq", input_shape=(8, 8), seed=3)
    img = load_dataset("digits", input_shape=(1, 8, 8), seed=3)
    assert "digits_seq" in DATASETS
    assert seq.input_shape == (8, 8)
    assert (seq.num_classes, len(seq.train), len(seq.val)) == (10, len(img.train), len(img.val))
    (x_seq, y_seq), (x_img, y_img) = next(seq.val.batches(16)), next(img.val.batches(16))
    assert x_seq.shape == (16, 8, 8)
    torch.testing.assert_close(x_seq, x_img[:, 0])
    torch.testing.assert_close(y_seq, y_img)
    assert seq.normalization is not None and len(seq.normalization.mean) == 1


def test_fashion_mnist_seq_reads_28_steps_of_28_features_from_the_root(tmp_path: Path) -> None:
    arrays = _fake_mnist(tmp_path / "FashionMNIST" / "raw")
    splits = load_dataset("fashion_mnist_seq", input_shape=(28, 28), root=tmp_path)
    x, y = next(splits.test.batches(30))
    assert x.shape == (30, 28, 28)
    np.testing.assert_array_equal(y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert splits.class_names[9] == "Ankle boot"


def test_an_npz_of_sequences_feeds_a_sequence_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5, 3)).astype(np.float32)
    path = tmp_path / "seq.npz"
    np.savez(path, x_train=x, y_train=np.arange(60) % 3)
    splits = load_dataset(str(path), input_shape=(5, 3), seed=0)
    batch, _ = next(splits.train.batches(4))
    assert batch.shape == (4, 5, 3)
    norm = splits.normalization
    assert norm is not None
    # one mean/std over all features: the batch is the raw steps, shifted and scaled
    raw = torch.from_numpy(x)
    assert any(torch.allclose(batch[0] * norm.std[0] + norm.mean[0], s, atol=1e-5) for s in raw)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((20, 1, 8, 8), np.float32), "images; a sequence model reads"),
        (np.zeros((20, 6, 8), np.float32), r"set input_shape \[6, 8\] \(--input-shape 6,8\)"),
    ],
)
def test_an_npz_that_is_not_sequences_of_the_model_s_shape_is_refused(
    tmp_path: Path, x: np.ndarray, message: str
) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 2)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), input_shape=(8, 8), seed=0)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("digits_seq", (1, 8, 8), "sequence models"),
        ("digits", (8, 8), "image models"),
        ("digits_seq", (8,), "steps, features"),
    ],
)
def test_a_shape_of_the_wrong_rank_is_refused(
    name: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(name, input_shape=shape)


def test_a_gru_learns_digits_read_row_by_row() -> None:
    torch.manual_seed(0)
    splits = load_dataset("digits_seq", input_shape=(8, 8), seed=0)
    model = build_model("gru_classifier_1x32", splits.num_classes, splits.input_shape)
    fine_tune(model, splits.train, steps=150, lr=0.05)
    assert evaluate(model, splits.val).top1 > 0.5
