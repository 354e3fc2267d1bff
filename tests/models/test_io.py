"""Weights come in safely; pruned checkpoints rebuild exactly."""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from models.errors import UnsafeFileError, WeightsError
from models.io import (
    CheckpointInfo,
    checkpoint_bytes,
    load_pruned,
    load_weights,
    read_checkpoint_info,
    read_state_dict,
    save_pruned,
)
from models.prune import Plan, apply_plan
from models.zoo import Architecture, build_model, register
from models.zoo._small import TinyCNN

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
    other = build_model("tiny_cnn", 10, SHAPE)
    key = "conv_a.weight"
    assert not torch.equal(other.state_dict()[key], tiny.state_dict()[key])  # a fresh init

    assert load_weights(other, path) is other
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(other.eval()(x), tiny.eval()(x))


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
    state = loaded.state_dict()
    assert state["conv_a.weight"].shape[0] == 8 and state["down.0.weight"].shape[0] == 16


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


# -- module versions (state_dict()._metadata) -----------------------------------------------
class VersionedTinyCNN(TinyCNN):
    """The tiny CNN at version 3, refusing a state_dict without it, as MNASNet does."""

    _version = 3

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        version = local_metadata.get("version")
        if version != 3:
            raise ValueError(f"version should be 3, not {version}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


@pytest.fixture
def versioned(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Register ``versioned_tiny`` (VersionedTinyCNN) in the zoo for one test."""
    from models.zoo import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    register(
        Architecture("versioned_tiny", lambda n, s: VersionedTinyCNN(n, s[0]), "small", SHAPE, 10)
    )
    yield "versioned_tiny"


def _versioned_checkpoint(arch: str) -> tuple[nn.Module, bytes]:
    model = build_model(arch, 10, SHAPE)
    plan = Plan({"conv_a": 8, "down.0": 16})
    pruned = apply_plan(model, plan, input_shape=SHAPE).eval()
    return pruned, checkpoint_bytes(pruned, CheckpointInfo(arch, 10, SHAPE, plan))


def _with_metadata(data: bytes, **changes: str | None) -> bytes:
    """Return safetensors ``data`` with metadata entries replaced (None: removed)."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    for key, value in changes.items():
        if value is None:
            header["__metadata__"].pop(key, None)
        else:
            header["__metadata__"][key] = value
    # tensor offsets count from the end of the header, so a longer header is fine
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + header_len :]


def test_a_module_that_needs_its_version_loads_back_from_a_pruned_checkpoint(
    versioned: str,
) -> None:
    pruned, data = _versioned_checkpoint(versioned)

    loaded, info = load_pruned(data)

    assert info.arch == versioned and isinstance(loaded, VersionedTinyCNN)
    assert loaded.state_dict()["conv_a.weight"].shape[0] == 8
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_a_checkpoint_written_before_versions_were_stored_loads_with_the_codes_versions(
    versioned: str,
) -> None:
    pruned, data = _versioned_checkpoint(versioned)
    old = _with_metadata(data, module_metadata=None)

    loaded, _ = load_pruned(old)

    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_a_module_refusing_its_weights_is_a_weights_error_naming_the_architecture(
    versioned: str,
) -> None:
    _, data = _versioned_checkpoint(versioned)
    stale = _with_metadata(data, module_metadata=json.dumps({"": {"version": 1}}))
    with pytest.raises(WeightsError, match=r"versioned_tiny .*refused.*version should be 3"):
        load_pruned(stale)


@pytest.mark.parametrize(
    "metadata",
    [
        "not json",
        json.dumps(["a list"]),
        json.dumps({"": {"version": 1.5}}),
        json.dumps({"": {"version": {"nested": 1}}}),
        json.dumps({"": {"hook": "x" * 10_000}}),
        json.dumps({f"m{i}": {"version": 1} for i in range(60_000)}),
    ],
    ids=["not-json", "list", "float", "nested", "long-string", "too-large"],
)
def test_malformed_module_metadata_is_refused(versioned: str, metadata: str) -> None:
    _, data = _versioned_checkpoint(versioned)
    with pytest.raises(WeightsError, match="malformed checkpoint metadata"):
        load_pruned(_with_metadata(data, module_metadata=metadata))


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "dataparallel-in-a-dict"])
def test_a_torch_saved_state_dict_keeps_its_module_versions(versioned: str, wrapped: bool) -> None:
    model = build_model(versioned, 10, SHAPE).eval()
    buf = io.BytesIO()
    state = nn.DataParallel(model).state_dict() if wrapped else model.state_dict()
    torch.save({"state_dict": state, "epoch": 3} if wrapped else state, buf)
    # without the file's versions this architecture could not load at all
    other = load_weights(build_model(versioned, 10, SHAPE), buf.getvalue()).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_a_plan_that_cannot_be_replayed_is_a_weights_error(tiny: nn.Module) -> None:
    data = checkpoint_bytes(tiny, CheckpointInfo("tiny_cnn", 10, SHAPE, Plan({"conv_a": 8})))
    bad = _with_metadata(data, plan=Plan({"no_such_layer": 8}).to_json())
    with pytest.raises(WeightsError, match="cannot replay the plan .* tiny_cnn.*no_such_layer"):
        load_pruned(bad)


def test_an_mnasnet_checkpoint_loads_back() -> None:
    # torchvision's MNASNet raises ValueError on a state_dict without its version
    model = build_model("mnasnet0_5", 10, (3, 32, 32)).eval()
    data = checkpoint_bytes(model, CheckpointInfo("mnasnet0_5", 10, (3, 32, 32), Plan()))
    loaded, _ = load_pruned(data)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
