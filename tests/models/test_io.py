"""Weights come in safely; pruned checkpoints rebuild exactly."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models.errors import UnsafeFileError, WeightsError
from models.io import (
    CheckpointInfo,
    load_pruned,
    load_weights,
    read_checkpoint_info,
    read_state_dict,
    save_pruned,
)
from models.prune import Plan, apply_plan
from models.zoo import build_model

SHAPE = (3, 16, 16)


class _CreatesAFile:
    """Pickles into a call that creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_code_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _CreatesAFile(marker)}, path)
    # the payload is real: plain pickle would run it
    assert not marker.exists()
    with pytest.raises(UnsafeFileError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_raw_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(_CreatesAFile(marker), protocol=2)
    with pytest.raises(WeightsError):
        read_state_dict(data)
    assert not marker.exists()


def test_state_dict_saved_by_torch_loads(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(tiny.state_dict(), path)
    other = build_model("tiny_cnn", 10, SHAPE)
    load_weights(other, path, arch="tiny_cnn")
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])


def test_wrapped_and_dataparallel_state_dicts_load(tiny: nn.Module) -> None:
    buf = io.BytesIO()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}, "epoch": 3}, buf
    )
    state = read_state_dict(buf.getvalue())
    assert set(state) == set(tiny.state_dict())


def test_safetensors_weights_load(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    load_weights(build_model("tiny_cnn", 10, SHAPE), path)


def test_weights_of_another_architecture_name_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("resnet20_cifar").state_dict(), path)
    with pytest.raises(WeightsError) as info:
        load_weights(build_model("tiny_cnn", 10, SHAPE), path, arch="tiny_cnn")
    message = str(info.value)
    assert "do not fit tiny_cnn" in message and "missing keys (stem.0.weight" in message


def test_wrong_number_of_classes_names_the_shape(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(WeightsError, match=r"fc.weight is \(10, 32\) in the file but \(5, 32\)"):
        load_weights(build_model("tiny_cnn", 5, SHAPE), path)


def test_text_is_not_weights(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match="not a weights file"):
        read_state_dict(path)


def test_nan_weights_are_refused(tmp_path: Path, tiny: nn.Module) -> None:
    state = tiny.state_dict()
    state["conv_a.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="conv_a.weight.*NaN"):
        load_weights(build_model("tiny_cnn", 10, SHAPE), path)


def test_truncated_safetensors_is_refused(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError):
        read_state_dict(path)


def test_pruned_checkpoint_round_trips(tmp_path: Path, tiny: nn.Module) -> None:
    plan = Plan({"conv_a": 8, "down.0": 16})
    pruned = apply_plan(tiny, plan, input_shape=SHAPE)
    info = CheckpointInfo(
        "tiny_cnn",
        10,
        SHAPE,
        plan,
        normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
        extra={"job": "j1"},
    )
    path = save_pruned(pruned, tmp_path / "pruned.safetensors", info)

    loaded, got = load_pruned(path)

    assert got == info and read_checkpoint_info(path) == info
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert loaded.conv_a.out_channels == 8 and loaded.down[0].out_channels == 16


def test_plain_safetensors_is_not_a_pruned_checkpoint(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match="no inferprune metadata"):
        load_pruned(path)


def test_checkpoint_whose_tensors_do_not_match_its_plan_is_refused(
    tmp_path: Path, tiny: nn.Module
) -> None:
    pruned = apply_plan(tiny, {"conv_a": 8}, input_shape=SHAPE)
    info = CheckpointInfo("tiny_cnn", 10, SHAPE, Plan({"conv_a": 16}))
    path = save_pruned(pruned, tmp_path / "bad.safetensors", info)
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_pruned(path)
