"""Devices: names resolved on this machine, mixed precision ignored off CUDA, batches
placed without copies on the CPU; every check runs without a GPU (torch's view of the
accelerators is faked where a test needs one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models.device
from models.cost import measure_latency
from models.data import load_dataset
from models.device import DeviceError, resolve_device
from models.errors import ModelsError
from models.train import fine_tune
from models.train._batches import on_device


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch sees two CUDA devices (only device resolution is faked)."""
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 2)


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 0)
    monkeypatch.setattr(models.device, "_mps_available", lambda: False)
    monkeypatch.delenv(models.device.DEVICE_ENV, raising=False)


def test_auto_takes_the_first_gpu_and_falls_back_to_the_cpu(
    no_accelerator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")  # INFERPRUNE_DEVICE unset: auto
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device(" CUDA:1 ") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_device_is_refused_naming_the_flag_and_what_is_there(
    no_accelerator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DeviceError, match=r"--device cuda: torch sees no CUDA device.*cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="--device mps: torch sees no Apple GPU"):
        resolve_device("mps")
    for bad in ("gpu", "cpu:1", "mps:0", "cuda:-1", ""):
        with pytest.raises(DeviceError, match="is not a device: use auto, cpu, cuda"):
            resolve_device(bad)
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 2)
    with pytest.raises(DeviceError, match="cuda:2: torch sees 2 CUDA.*cuda:0 to cuda:1"):
        resolve_device("cuda:2")
    # the environment is named when it gave the device
    monkeypatch.setenv(models.device.DEVICE_ENV, "tpu")
    with pytest.raises(DeviceError, match="INFERPRUNE_DEVICE 'tpu' is not a device"):
        resolve_device(None)


def test_batches_stay_untouched_on_the_cpu() -> None:
    batches = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)) for _ in range(3)]
    placed = list(on_device(iter(batches), torch.device("cpu")))
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(placed, batches, strict=True))


def test_mixed_precision_changes_nothing_on_the_cpu() -> None:
    data = load_dataset("synthetic", input_shape=(3, 8, 8))

    def trained(amp: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(data.num_classes))
        model(torch.zeros(1, 3, 8, 8))
        fine_tune(model, data.train, steps=5, seed=1, amp=amp)
        return model.state_dict()

    plain, mixed = trained(False), trained(True)
    assert all(torch.equal(plain[k], mixed[k]) for k in plain)


def test_gpu_latency_without_a_gpu_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(ModelsError, match="cuda:0: torch sees no such CUDA device"):
            measure_latency(model, (3, 8, 8), backend=backend, device="cuda:0", repeats=1)
    with pytest.raises(ModelsError, match="use cpu or cuda:N"):
        measure_latency(model, (3, 8, 8), device="tpu", repeats=1)
    latency = measure_latency(model, (3, 8, 8), backend="torch", repeats=2, warmup=0)
    assert latency.device == "cpu"
