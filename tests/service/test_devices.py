"""Worker placement on devices: one worker per GPU with ``--device cuda``, a worker
whose device is missing stops before it claims anything, and the CLI names the flag.
Runs without a GPU: torch's count of CUDA devices is faked where a test needs GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import models.device
from models.device import DeviceError
from service.cli import main
from service.settings import Settings
from service.worker import Worker, worker_devices


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 2)
    monkeypatch.delenv(models.device.DEVICE_ENV, raising=False)


def test_cuda_gives_each_worker_its_own_gpu(gpus: None) -> None:
    assert worker_devices("cuda", None) == ["cuda:0", "cuda:1"]  # one per GPU by default
    assert worker_devices("auto", None) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda", 3) == ["cuda:0", "cuda:1", "cuda:0"]  # round-robin
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]  # pinned by hand
    assert worker_devices("cpu", None) == ["cpu"]
    assert worker_devices("cpu", 0) == []  # the API alone


def test_an_api_only_serve_does_not_import_torch() -> None:
    """``serve --workers 0`` (the API beside remote workers) loads no torch: the app, the
    store and the empty worker pool import without it (seconds and memory saved)."""
    code = (
        "import sys\n"
        "from service.api.app import create_app\n"
        "from service.store import make_engine\n"
        "from service.worker import WorkerPool, worker_devices\n"
        "assert worker_devices('cuda', 0) == []\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_a_gpu_serve_starts_cpu_workers_or_refuses_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 0)
    monkeypatch.setattr(models.device, "_mps_available", lambda: False)
    monkeypatch.delenv(models.device.DEVICE_ENV, raising=False)
    assert worker_devices(None, None) == ["cpu"]
    assert worker_devices("auto", 2) == ["cpu", "cpu"]
    with pytest.raises(DeviceError, match="--device cuda: torch sees no CUDA device"):
        worker_devices("cuda", None)


def test_a_worker_whose_device_is_missing_stops_before_claiming(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 0)
    with pytest.raises(DeviceError, match="worker device cuda:1: torch sees no CUDA device"):
        Worker(settings.model_copy(update={"device": "cuda:1"}))
    assert str(Worker(settings.model_copy(update={"device": "cpu"})).device) == "cpu"


def test_cli_commands_name_the_device_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(models.device, "_cuda_count", lambda: 0)
    monkeypatch.chdir(tmp_path)
    for command in (
        ["train", "--arch", "tiny_cnn", "--dataset", "synthetic", "-o", "x.safetensors"],
        ["apply", "--arch", "tiny_cnn", "--ratio", "0.5", "--dataset", "synthetic", "-o", "x"],
        ["prune", "--arch", "tiny_cnn", "--dataset", "synthetic", "--flops", "0.5"]
        + ["--trials", "2", "--out", "o"],
    ):
        assert main([*command, "--device", "cuda:0"]) != 0
        error = " ".join(capsys.readouterr().err.split())
        assert "error: --device cuda:0: torch sees no CUDA device" in error
    assert not (tmp_path / "o").exists()  # prune refused before it made its --out
