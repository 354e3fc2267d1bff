"""Data sets: deterministic splits, model-ready batches, local files, hostile uploads."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from models.data import (
    DATASETS,
    DataSplits,
    TensorSplit,
    describe_datasets,
    inspect_dataset,
    load_dataset,
)
from models.errors import DataError
from models.zoo import build_model


def _split(source: object) -> TensorSplit:
    assert isinstance(source, TensorSplit)
    return source


def _rows(splits: DataSplits, which: tuple[str, ...] = ("train", "val", "test")) -> np.ndarray:
    """Every stored image of the named splits as a flat row, sorted (a multiset)."""
    parts = [_split(getattr(splits, name)).images.flatten(1).numpy() for name in which]
    rows = np.concatenate(parts)
    return rows[np.lexsort(rows.T[::-1])]


def _labels(source: object) -> np.ndarray:
    return _split(source).labels.numpy()


# --- digits: deterministic, disjoint, model-ready ---------------------------------------


def test_digits_split_is_fixed_by_the_seed() -> None:
    a = load_dataset("digits", input_shape=(1, 8, 8), seed=3)
    b = load_dataset("digits", input_shape=(1, 8, 8), seed=3)
    c = load_dataset("digits", input_shape=(1, 8, 8), seed=4)
    assert torch.equal(_split(a.val).images, _split(b.val).images)
    assert torch.equal(_split(a.test).labels, _split(b.test).labels)
    assert not torch.equal(_split(a.val).images, _split(c.val).images)


def test_digits_splits_are_disjoint_cover_everything_and_are_stratified() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits", input_shape=(1, 8, 8))
    digits = load_digits()
    expected = (digits.images.reshape(len(digits.images), -1) / 16.0).astype(np.float32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1257, 270, 270)
    np.testing.assert_array_equal(_rows(splits), expected[np.lexsort(expected.T[::-1])])
    assert splits.num_classes == 10
    assert splits.class_names == tuple("0123456789")
    # stratified: every class appears in val and test in about its overall share
    for name in ("val", "test"):
        counts = np.bincount(_labels(getattr(splits, name)), minlength=10)
        assert counts.min() >= 25


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)])
def test_batches_have_the_model_input_shape_and_are_normalized(
    shape: tuple[int, int, int],
) -> None:
    splits = load_dataset("digits", input_shape=shape)
    assert splits.input_shape == shape
    assert splits.normalization is not None and len(splits.normalization.mean) == shape[0]
    inputs = []
    for x, y in splits.train.batches(256, shuffle=True, seed=1):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == shape and y.shape == (x.shape[0],)
        inputs.append(x)
    everything = torch.cat(inputs)
    assert len(everything) == len(splits.train)
    assert everything.mean((0, 2, 3)).abs().max() < 1e-3
    assert (everything.std((0, 2, 3)) - 1).abs().max() < 1e-2
    x_val, _ = next(splits.val.batches(16))
    assert x_val.shape == (16, *shape)


def test_more_classes_than_the_model_has_is_refused() -> None:
    with pytest.raises(DataError, match="10 classes.*4 outputs"):
        load_dataset("digits", input_shape=(1, 8, 8), num_classes=4)
    assert load_dataset("digits", input_shape=(1, 8, 8), num_classes=20).num_classes == 10


def test_unknown_names_and_bad_arguments_are_data_errors() -> None:
    with pytest.raises(DataError, match="Did you mean cifar10"):
        load_dataset("cifar", input_shape=(3, 32, 32))
    with pytest.raises(DataError, match="sum to less than 1"):
        load_dataset("digits", input_shape=(1, 8, 8), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(DataError, match="input_shape"):
        load_dataset("digits", input_shape=(1, 0, 8))
    assert set(DATASETS) <= {usage.split("[")[0] for usage in describe_datasets()}


# --- synthetic ---------------------------------------------------------------------------


def test_synthetic_is_separable_and_a_tiny_cnn_learns_it_in_two_epochs() -> None:
    splits = load_dataset("synthetic", input_shape=(3, 16, 16), seed=0)
    assert splits.num_classes == 10
    assert len(splits.train) + len(splits.val) + len(splits.test) == 600
    x_train, y_train = next(splits.train.batches(len(splits.train)))
    x_test, y_test = next(splits.test.batches(len(splits.test)))
    centroids = torch.stack([x_train[y_train == k].mean(0) for k in range(10)])
    nearest = torch.cdist(x_test.flatten(1), centroids.flatten(1)).argmin(1)
    assert (nearest == y_test).float().mean() > 0.9

    model = build_model("tiny_cnn", 10, (3, 16, 16))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(2):
        for x, y in splits.train.batches(32, shuffle=True, seed=epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean()
    assert accuracy > 0.8


def test_synthetic_options_and_their_errors() -> None:
    splits = load_dataset(
        "synthetic:classes=4,samples=256,size=12,channels=1", input_shape=(1, 8, 8)
    )
    assert splits.num_classes == 4
    assert _split(splits.train).images.shape[1:] == (1, 12, 12)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 256
    assert inspect_dataset("synthetic:classes=4,samples=256") == (4, 256)
    with pytest.raises(DataError, match="classes"):
        load_dataset("synthetic:colours=4", input_shape=(3, 16, 16))
    with pytest.raises(DataError, match="not a valid int"):
        load_dataset("synthetic:classes=four", input_shape=(3, 16, 16))
    with pytest.raises(DataError, match="too large"):
        inspect_dataset("synthetic:samples=1000000,size=256")


# --- public data sets from a local root -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-bin/data_batch_1.bin"),
        ("cifar10", "cifar-10-batches-py/test_batch"),
        ("cifar100", "cifar-100-python/train"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
    ],
)
def test_missing_public_data_sets_name_the_files_looked_for(
    tmp_path: Path, name: str, expected: str
) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, input_shape=(3, 32, 32), root=tmp_path)
    assert str(tmp_path / expected) in str(info.value)
    assert "never downloads" in str(info.value)
    with pytest.raises(DataError):
        inspect_dataset(name, root=tmp_path)


def test_data_root_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERPRUNE_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=str(tmp_path / "elsewhere" / "MNIST")):
        load_dataset("mnist", input_shape=(1, 28, 28))


def _write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_mnist(raw: Path, n_train: int = 120, n_test: int = 30) -> dict[str, np.ndarray]:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for i, (name, array) in enumerate(arrays.items()):
        _write_idx(raw / name, array, compress=i % 2 == 1)
    return arrays


def test_fake_mnist_idx_files_load_with_the_official_test_split(tmp_path: Path) -> None:
    arrays = _fake_mnist(tmp_path / "MNIST" / "raw")
    splits = load_dataset("mnist", input_shape=(1, 28, 28), root=tmp_path)
    test = _split(splits.test)
    assert test.images.dtype == torch.uint8
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert (len(splits.train), len(splits.val)) == (102, 18)
    assert splits.num_classes == 10
    x, _ = next(splits.train.batches(8))
    assert x.shape == (8, 1, 28, 28)
    assert inspect_dataset("mnist", root=tmp_path) == (10, 150)


def test_fashion_mnist_loads_from_debians_layout(tmp_path: Path) -> None:
    # `apt install dataset-fashion-mnist` puts the .gz files in /usr/share/datasets/fashion-mnist
    arrays = _fake_mnist(tmp_path / "fashion-mnist")
    splits = load_dataset("fashion_mnist", input_shape=(1, 28, 28), root=tmp_path)
    np.testing.assert_array_equal(
        _split(splits.test).labels.numpy(), arrays["t10k-labels-idx1-ubyte"]
    )
    assert splits.class_names[9] == "Ankle boot"


def test_corrupt_idx_files_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    _fake_mnist(raw)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion_mnist", input_shape=(1, 28, 28), root=tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("fashion_mnist", input_shape=(1, 28, 28), root=tmp_path)


def _cifar_records(n: int, seed: int, label_bytes: int = 1) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    rows = np.concatenate(
        [np.zeros((n, label_bytes - 1), np.uint8), labels[:, None], images.reshape(n, -1)], 1
    )
    return rows.tobytes(), images, labels


def _fake_cifar10_bin(root: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar_records(20, i)[0])
    data, images, labels = _cifar_records(25, 0)
    (folder / "test_batch.bin").write_bytes(data)
    return images, labels


def test_fake_cifar10_binary_files_load(tmp_path: Path) -> None:
    images, labels = _fake_cifar10_bin(tmp_path)
    splits = load_dataset("cifar10", input_shape=(3, 32, 32), root=tmp_path, num_classes=10)
    np.testing.assert_array_equal(_split(splits.test).images.numpy(), images)
    np.testing.assert_array_equal(_labels(splits.test), labels)
    assert (len(splits.train), len(splits.val)) == (85, 15)
    assert splits.class_names[0] == "airplane"
    x, _ = next(splits.val.batches(4))
    assert x.shape == (4, 3, 32, 32)
    assert inspect_dataset("cifar10", root=tmp_path) == (10, 125)


def test_fake_cifar100_binary_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(_cifar_records(60, 1, label_bytes=2)[0])
    data, _, labels = _cifar_records(20, 2, label_bytes=2)
    (folder / "test.bin").write_bytes(data)
    splits = load_dataset("cifar100", input_shape=(1, 16, 16), root=tmp_path)
    assert splits.num_classes == 100
    np.testing.assert_array_equal(_labels(splits.test), labels)


def _write_cifar_py(folder: Path, protocol: int) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    test_images: np.ndarray = np.zeros(0, np.uint8)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        images = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
        batch = {"batch_label": name, "labels": [i % 10 for i in range(12)], "data": images}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        test_images = images
    return test_images


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_python_version_loads_through_the_restricted_unpickler(
    tmp_path: Path, protocol: int
) -> None:
    test_images = _write_cifar_py(tmp_path / "cifar-10-batches-py", protocol)
    splits = load_dataset("cifar10", input_shape=(3, 32, 32), root=tmp_path)
    np.testing.assert_array_equal(
        _split(splits.test).images.numpy(), test_images.reshape(-1, 3, 32, 32)
    )
    assert len(splits.train) + len(splits.val) == 60


class _OpenPayload:
    """Unpickling this creates ``path`` (as ``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


class _ShellPayload:
    """Unpickling this runs ``touch path`` in a shell."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_OpenPayload, _ShellPayload])
def test_malicious_cifar_pickle_is_refused_without_running_it(
    tmp_path: Path, payload: type
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_py(folder, protocol=4)
    marker = tmp_path / "pwned"
    batch = {"data": np.zeros((12, 3072), np.uint8), "labels": payload(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match="refusing to load .*data_batch_3"):
        load_dataset("cifar10", input_shape=(3, 32, 32), root=tmp_path)
    assert not marker.exists()


def test_the_malicious_payload_is_real(tmp_path: Path) -> None:
    # the refusal above means something only if plain pickle would have run the payload
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_OpenPayload(marker))).close()
    assert marker.exists()


def test_binary_cifar_is_preferred_over_the_pickle(tmp_path: Path) -> None:
    _fake_cifar10_bin(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_py(folder, protocol=4)
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": _OpenPayload(marker)}))
    splits = load_dataset("cifar10", input_shape=(3, 32, 32), root=tmp_path)
    assert len(splits.test) == 25
    assert not marker.exists()


# --- uploaded .npz -----------------------------------------------------------------------


def _npz_arrays(n: int = 80, classes: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n, 10, 10, 3), dtype=np.uint8),
        "y_train": np.arange(n) % classes,
    }


def test_valid_npz_loads_by_path_and_by_prefix(tmp_path: Path) -> None:
    path = tmp_path / "upload.npz"
    np.savez_compressed(path, **_npz_arrays())
    for name in (str(path), f"npz:{path}"):
        splits = load_dataset(name, input_shape=(3, 10, 10), num_classes=5)
        assert splits.num_classes == 5
        assert _split(splits.train).images.shape[1:] == (3, 10, 10)  # (N,H,W,C) transposed
        assert len(splits.train) + len(splits.val) + len(splits.test) == 80
    assert inspect_dataset(str(path)) == (5, 80)
    with pytest.raises(DataError, match="5 classes"):
        inspect_dataset(str(path), num_classes=3)


def test_npz_val_and_test_arrays_are_used_as_given(tmp_path: Path) -> None:
    path = tmp_path / "upload.npz"
    x_val = np.random.default_rng(1).random((7, 1, 6, 6), dtype=np.float32)
    np.savez(
        path,
        x_train=np.random.default_rng(0).random((40, 6, 6)),
        y_train=np.arange(40) % 4,
        x_val=x_val,
        y_val=np.arange(7) % 4,
        x_test=np.zeros((9, 6, 6)),
        y_test=np.full(9, 3.0),
    )
    splits = load_dataset(str(path), input_shape=(1, 6, 6))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 7, 9)
    np.testing.assert_array_equal(_split(splits.val).images.numpy(), x_val)
    assert splits.num_classes == 4


def test_npz_with_object_arrays_is_refused_before_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    marker = tmp_path / "pwned"
    labels = np.empty(80, dtype=object)
    labels[:] = [_OpenPayload(marker)] * 80
    np.savez(path, x_train=_npz_arrays()["x_train"], y_train=labels, allow_pickle=True)
    with pytest.raises(DataError, match="y_train has dtype object"):
        load_dataset(str(path), input_shape=(3, 10, 10))
    with pytest.raises(DataError, match="object"):
        inspect_dataset(str(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_train": np.arange(79) % 5}, "80 samples but y_train has 79"),
        ({"x_val": np.zeros((5, 10, 10))}, "x_val without its partner"),
        ({"y_train": np.arange(80) - 1}, "negative labels"),
        ({"y_train": np.arange(80) + 0.5}, "non-integer"),
        ({"x_train": np.zeros((80, 10, 10, 4), np.uint8)}, "neither axis 1 nor axis 3"),
        ({"x_train": np.full((80, 10, 10), 300, np.int32)}, r"\[0, 255\]"),
        ({"x_train": np.full((80, 10, 10), np.nan)}, "NaN"),
        ({"x_train": np.array(["a"] * 80)}, "dtype <U1"),
    ],
)
def test_malformed_npz_is_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **{**_npz_arrays(), **change})
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), input_shape=(3, 10, 10))


def test_npz_missing_arrays_or_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((4, 8, 8)), y=np.zeros(4))
    with pytest.raises(DataError, match="no x_train array"):
        load_dataset(str(path), input_shape=(1, 8, 8))
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        inspect_dataset(str(path))
    with pytest.raises(DataError, match="does not exist"):
        inspect_dataset(str(tmp_path / "absent.npz"))


# --- imagefolder -------------------------------------------------------------------------


def _image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "owl")) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(6):
            size = (12 + i, 10 + index)
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_loads_classes_from_subfolders(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "pets")
    splits = load_dataset(f"imagefolder:{folder}", input_shape=(3, 16, 16))
    assert splits.num_classes == 3
    assert splits.class_names == ("cat", "dog", "owl")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 18
    x, _ = next(splits.train.batches(4))
    assert x.shape == (4, 3, 16, 16)
    grey = load_dataset(f"imagefolder:{folder}", input_shape=(1, 8, 8))
    assert _split(grey.train).images.shape[1:] == (1, 8, 8)
    assert inspect_dataset(f"imagefolder:{folder}") == (3, 18)


def test_odd_imagefolders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'absent'}", input_shape=(3, 16, 16))
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", input_shape=(3, 16, 16))
    folder = _image_folder(tmp_path / "pets")
    (folder / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        inspect_dataset(f"imagefolder:{folder}")
    (folder / "empty" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(f"imagefolder:{folder}", input_shape=(3, 16, 16))
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("imagefolder:", input_shape=(3, 16, 16))


# --- check_npz: every value, in bounded memory; messages without server paths ------------


def _npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def write_zero_bomb_npz(path: Path, samples: int, *, declared: int | None = None) -> int:
    """Write an .npz whose x_train is ``samples`` 32x32x3 uint8 zero images, deflated
    (1 GiB packs into about 1 MiB) without ever holding them; return the unpacked size.

    With ``declared``, the array header claims that many samples instead (a lie).
    """
    import zlib

    def member(name: str, header: bytes, zeros: int) -> tuple[bytes, bytes, int, int]:
        piece = 64 << 20
        fresh = zlib.compressobj(9, zlib.DEFLATED, -15)
        segment = fresh.compress(bytes(piece)) + fresh.flush(zlib.Z_FULL_FLUSH)
        head = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = [head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)]
        crc = zlib.crc32(header)
        whole, rest = divmod(zeros, piece)
        body += [segment] * whole
        zero_piece = bytes(piece)
        for _ in range(whole):
            crc = zlib.crc32(zero_piece, crc)
        if rest:
            tail = zlib.compressobj(9, zlib.DEFLATED, -15)
            body.append(tail.compress(bytes(rest)) + tail.flush(zlib.Z_FULL_FLUSH))
            crc = zlib.crc32(bytes(rest), crc)
        body.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH))
        return name.encode(), b"".join(body), crc, len(header) + zeros

    labels = np.zeros(samples if declared is None else declared, dtype=np.uint8)
    x_count = 32 * 32 * 3 * samples
    shape = (samples if declared is None else declared, 32, 32, 3)
    members = [
        member("x_train.npy", _npy_header(shape), x_count),
        member("y_train.npy", _npy_header(labels.shape) + labels.tobytes(), 0),
    ]
    out = bytearray()
    central = bytearray()
    for name, data, crc, size in members:
        offset = len(out)
        fields = (20, 0, 8, 0, 0, crc, len(data), size, len(name), 0)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return x_count


def test_a_zip_bomb_npz_is_refused_from_its_headers_before_any_byte_unpacks(
    tmp_path: Path,
) -> None:
    from models.data import check_npz

    path = tmp_path / "bomb.npz"
    unpacked = write_zero_bomb_npz(path, 360_000)  # 1.1 GB of pixels
    assert unpacked > 2**30 and path.stat().st_size < 4 << 20
    with pytest.raises(DataError, match=r"unpacks to 1\.03 GiB of arrays; at most 1\.00 GiB"):
        check_npz(path, max_bytes=2**30)


def test_an_npz_whose_header_lies_is_refused_after_reading_what_it_declared(
    tmp_path: Path,
) -> None:
    """The header says 10 images; the member unpacks to 100 MB. Only the declared bytes
    (plus one) are ever read."""
    from models.data import check_npz

    path = tmp_path / "liar.npz"
    write_zero_bomb_npz(path, 34_000, declared=10)
    with pytest.raises(DataError, match="header describes"):
        check_npz(path)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.full((80, 10, 10), np.inf, np.float32), "NaN or infinite"),
        (np.where(np.arange(8000).reshape(80, 10, 10) == 7999, np.nan, 0.5), "NaN or infinite"),
        (np.full((80, 10, 10), 256, np.int16), r"\[0, 255\]"),
    ],
)
def test_check_npz_reads_every_value(tmp_path: Path, x: np.ndarray, message: str) -> None:
    from models.data import check_npz

    path = tmp_path / "d.npz"
    np.savez_compressed(path, x_train=x, y_train=np.arange(80) % 5)
    with pytest.raises(DataError, match=message) as caught:
        check_npz(path)
    assert str(tmp_path) not in str(caught.value)
    assert inspect_dataset(str(path)) == (5, 80)  # the cheap check does not read pixels


def test_check_npz_accepts_what_load_accepts(tmp_path: Path) -> None:
    from models.data import check_npz

    path = tmp_path / "d.npz"
    arrays: dict[str, Any] = {**_npz_arrays(), "x_val": np.zeros((6, 10, 10, 3))}
    np.savez(path, **arrays, y_val=np.full(6, 7.0))
    assert check_npz(path) == (8, 86)
    arrays = {**_npz_arrays(), "y_train": np.arange(80) - 1}
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="negative labels"):
        check_npz(path)


def test_data_set_messages_name_files_as_their_owner_knows_them(tmp_path: Path) -> None:
    hidden = tmp_path / "var" / "lib" / "uploads" / ("ab" * 32)
    hidden.mkdir(parents=True)
    path = hidden / "mine.npz"
    arrays: dict[str, Any] = {**_npz_arrays(), "x_train": np.full((80, 10, 10), np.nan)}
    np.savez(path, **arrays)
    with pytest.raises(DataError) as caught:
        load_dataset(f"npz:{path}", input_shape=(3, 10, 10))
    assert "mine.npz" in str(caught.value) and str(hidden) not in str(caught.value)
    np.savez(path, x_train=np.zeros((24, 10, 10), np.uint8), y_train=np.arange(24) % 12)
    with pytest.raises(DataError) as caught:
        load_dataset(str(path), input_shape=(1, 10, 10), num_classes=10)
    assert "mine.npz has 12 classes" in str(caught.value) and str(hidden) not in str(caught.value)
    folder = _image_folder(hidden / "pets")
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as caught:
        load_dataset(f"imagefolder:{folder}", input_shape=(3, 16, 16))
    assert "pets/cat/broken.png" in str(caught.value) and str(hidden) not in str(caught.value)
