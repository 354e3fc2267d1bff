"""Latency is measured on both backends from the timed runs only, and leaves torch as found."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import models.cost._latency
import models.io
from models.cost import LATENCY_BACKENDS, ONNX_OPTIMIZATIONS, Latency, measure_latency
from models.errors import ExportError, ModelsError
from models.io import onnx_model_bytes
from models.zoo import build_model

TINY_SHAPE = (3, 16, 16)


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.fixture
def tiny() -> nn.Module:
    return build_model("tiny_cnn", 10, TINY_SHAPE)


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("backend", LATENCY_BACKENDS)
def test_latency_statistics_are_positive_and_ordered(tiny: nn.Module, backend: str) -> None:
    latency = measure_latency(tiny, TINY_SHAPE, backend=backend, batch_size=2, warmup=2, repeats=10)

    assert 0 < latency.min_ms <= latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert latency.mean_ms > 0
    assert (latency.backend, latency.threads, latency.batch_size) == (backend, 1, 2)
    assert (latency.warmup, latency.repeats) == (2, 10)
    report = latency.to_dict()
    assert {"median", "p10", "p90"} <= report.keys()
    assert report["median"] == latency.median_ms


class FakeClock:
    """A ``perf_counter_ns`` that advances only when the model runs, by a known duration."""

    def __init__(self) -> None:
        self.now_ns = 0
        self.runs_ms: list[int] = []

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def run(self) -> None:
        """One forward pass: it takes 1 to 11 ms, differing from run to run."""
        ms = (7 * len(self.runs_ms)) % 11 + 1
        self.runs_ms.append(ms)
        self.now_ns += ms * 1_000_000


class Clocked(nn.Module):
    def __init__(self, inner: nn.Module, clock: FakeClock) -> None:
        super().__init__()
        self.inner, self.clock = inner, clock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.run()
        return self.inner(x)


@pytest.mark.parametrize("backend", LATENCY_BACKENDS)
def test_the_statistics_are_those_of_the_timed_runs_of_the_model(
    tiny: nn.Module, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whether a bigger model measures slower is timed in benchmarks/latency_meter.py;
    # here a fake clock makes every run of the model take a known time.
    clock = FakeClock()
    monkeypatch.setattr(
        models.cost._latency, "time", SimpleNamespace(perf_counter_ns=clock.perf_counter_ns)
    )
    model: nn.Module = Clocked(tiny, clock)
    if backend == "onnxruntime":
        real_session = models.cost._latency.ort.InferenceSession

        class ClockedSession:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.session = real_session(*args, **kwargs)

            def get_inputs(self) -> Any:
                return self.session.get_inputs()

            def run(self, *args: Any) -> Any:
                clock.run()
                return self.session.run(*args)

        monkeypatch.setattr(models.cost._latency.ort, "InferenceSession", ClockedSession)
        model = tiny

    latency = measure_latency(model, TINY_SHAPE, backend=backend, warmup=3, repeats=20)

    timed = np.array(clock.runs_ms[-20:], dtype=float)  # the last 20 runs; warm-ups untimed
    assert len(clock.runs_ms) >= 3 + 20
    p10, median, p90 = np.percentile(timed, [10, 50, 90])
    assert latency.median_ms == pytest.approx(median)
    assert (latency.p10_ms, latency.p90_ms) == (pytest.approx(p10), pytest.approx(p90))
    assert latency.min_ms == pytest.approx(timed.min())
    assert latency.mean_ms == pytest.approx(timed.mean())
    assert latency.p10_ms < latency.median_ms < latency.p90_ms  # the runs differ


@pytest.mark.usefixtures("two_torch_threads")
def test_torch_thread_count_is_restored(tiny: nn.Module) -> None:
    measure_latency(tiny, TINY_SHAPE, backend="torch", threads=1, warmup=2, repeats=10)
    assert torch.get_num_threads() == 2

    with pytest.raises(ModelsError, match="boom"):
        measure_latency(Broken(), TINY_SHAPE, backend="torch", threads=1, warmup=2, repeats=10)
    assert torch.get_num_threads() == 2


def test_given_onnx_bytes_are_timed_without_exporting_again(
    tiny: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = onnx_model_bytes(tiny, TINY_SHAPE)

    def no_export(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("exported again")

    monkeypatch.setattr(models.io, "onnx_model_bytes", no_export)
    latency = measure_latency(tiny, TINY_SHAPE, onnx_bytes=data, batch_size=3, warmup=2, repeats=10)
    assert isinstance(latency, Latency)
    assert latency.median_ms > 0


def test_a_given_graph_is_checked_on_the_timed_input_before_any_run_is_timed(
    tiny: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = onnx_model_bytes(tiny, TINY_SHAPE)
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def check(x: np.ndarray, output: np.ndarray) -> bool:
        seen.append((x.shape, output.shape))
        return True

    measure_latency(tiny, TINY_SHAPE, onnx_bytes=data, batch_size=2, onnx_check=check, repeats=5)
    assert seen == [((2, *TINY_SHAPE), (2, 10))]  # once, on the input that is timed

    timed: list[object] = []
    monkeypatch.setattr(models.cost._latency, "_time_runs", lambda *a: timed.append(a))
    with pytest.raises(ExportError, match="differs from its model"):
        measure_latency(tiny, TINY_SHAPE, onnx_bytes=data, onnx_check=lambda x, out: False)
    assert timed == []


def test_a_graph_to_check_that_cannot_run_is_an_export_error(tiny: nn.Module) -> None:
    with pytest.raises(ExportError, match="cannot be timed"):
        measure_latency(tiny, TINY_SHAPE, onnx_bytes=b"not onnx", onnx_check=lambda x, y: True)
    with pytest.raises(ModelsError, match="cannot load") as raised:  # unchecked: as ever
        measure_latency(tiny, TINY_SHAPE, onnx_bytes=b"not onnx")
    assert not isinstance(raised.value, ExportError)


@pytest.mark.parametrize("level", ONNX_OPTIMIZATIONS)
def test_the_onnx_optimization_level_reaches_the_session(
    tiny: nn.Module, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    real_session = models.cost._latency.ort.InferenceSession

    def spy(data: bytes, options: Any, **kwargs: Any) -> Any:
        seen.append(options.graph_optimization_level)
        return real_session(data, options, **kwargs)

    monkeypatch.setattr(models.cost._latency.ort, "InferenceSession", spy)
    latency = measure_latency(tiny, TINY_SHAPE, onnx_optimization=level, warmup=1, repeats=5)
    assert seen == [ONNX_OPTIMIZATIONS[level]]
    assert latency.median_ms > 0


def test_unknown_onnx_optimization_lists_the_valid_ones(tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="all, extended, basic, disabled"):
        measure_latency(tiny, TINY_SHAPE, onnx_optimization="max")


def test_measurement_restores_the_training_mode(tiny: nn.Module) -> None:
    tiny.train()
    measure_latency(tiny, TINY_SHAPE, backend="torch", warmup=2, repeats=10)
    assert tiny.training and tiny.get_submodule("bn_a").training


def test_unknown_backend_lists_the_valid_ones(tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="onnxruntime, torch"):
        measure_latency(tiny, TINY_SHAPE, backend="tensorrt")


def test_only_cpu_is_supported(tiny: nn.Module) -> None:
    with pytest.raises(ModelsError, match="cuda"):
        measure_latency(tiny, TINY_SHAPE, device="cuda")


@pytest.mark.parametrize("setting", ["threads", "batch_size", "repeats"])
def test_non_positive_settings_are_rejected(tiny: nn.Module, setting: str) -> None:
    settings: dict[str, Any] = {setting: 0}
    with pytest.raises(ModelsError, match=setting):
        measure_latency(tiny, TINY_SHAPE, **settings)
