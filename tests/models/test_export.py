"""Exports load in their own runtime, keep a dynamic batch and match torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.errors import ExportError
from models.io import (
    EXPORT_FORMATS,
    export_model,
    export_onnx,
    export_pt2,
    export_torchscript,
    onnx_model_bytes,
)
from models.zoo import build_model

TINY_SHAPE = (3, 16, 16)


class NoisyCNN(nn.Module):
    """Adds fresh noise on every call, so no export can reproduce its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return self.fc(y + torch.randn_like(y))


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_model("tiny_cnn", 10, TINY_SHAPE)


def _batch(shape: tuple[int, ...], n: int) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(n))


def _torch_out(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


def _ort_out(data: bytes, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": x.numpy()})
    return np.asarray(out)


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("tiny_cnn", TINY_SHAPE),
        # adaptive pooling 6x6 -> 5x5: the fast exporter refuses it, the fallback works
        ("lenet5", (1, 32, 32)),
    ],
)
def test_onnx_file_runs_in_onnxruntime_and_matches_torch(
    tmp_path: Path, arch: str, shape: tuple[int, int, int]
) -> None:
    model = build_model(arch, 10, shape)
    path = tmp_path / "model.onnx"

    export_model(model, shape, "onnx", path)

    data = path.read_bytes()
    for n in (1, 4):
        x = _batch(shape, n)
        np.testing.assert_allclose(_ort_out(data, x), _torch_out(model, x), atol=1e-4)


def test_onnx_has_named_io_and_a_symbolic_batch_dimension(tiny: nn.Module) -> None:
    proto = onnx.load_from_string(export_onnx(tiny, TINY_SHAPE))

    (graph_input,) = proto.graph.input
    (graph_output,) = proto.graph.output
    assert graph_input.name == "input"
    assert graph_output.name == "logits"
    in_dims = graph_input.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch"
    assert [d.dim_value for d in in_dims[1:]] == list(TINY_SHAPE)
    assert graph_output.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_export_onnx_returns_the_bytes_it_writes(tmp_path: Path, tiny: nn.Module) -> None:
    path = tmp_path / "m.onnx"
    data = export_onnx(tiny, TINY_SHAPE, path)
    assert path.read_bytes() == data


def test_fast_onnx_bytes_match_torch(tiny: nn.Module) -> None:
    x = _batch(TINY_SHAPE, 2)
    np.testing.assert_allclose(
        _ort_out(onnx_model_bytes(tiny, TINY_SHAPE), x), _torch_out(tiny, x), atol=1e-4
    )


def test_pt2_file_loads_with_torch_export_and_matches_torch(
    tmp_path: Path, tiny: nn.Module
) -> None:
    path = tmp_path / "model.pt2"

    export_model(tiny, TINY_SHAPE, "pt2", path)

    loaded = torch.export.load(path).module()
    for n in (1, 4):
        x = _batch(TINY_SHAPE, n)
        with torch.inference_mode():
            out = loaded(x).numpy()
        np.testing.assert_allclose(out, _torch_out(tiny, x), atol=1e-4)


def test_torchscript_file_loads_with_torch_jit_and_matches_torch(
    tmp_path: Path, tiny: nn.Module
) -> None:
    path = tmp_path / "model.pt"

    export_model(tiny, TINY_SHAPE, "torchscript", path)

    loaded = torch.jit.load(str(path))
    for n in (1, 4):
        x = _batch(TINY_SHAPE, n)
        with torch.inference_mode():
            out = loaded(x).numpy()
        np.testing.assert_allclose(out, _torch_out(tiny, x), atol=1e-4)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_an_export_that_disagrees_with_torch_raises(tmp_path: Path, fmt: str) -> None:
    exporters = {
        "onnx": lambda m, p: export_onnx(m, TINY_SHAPE, p),
        "pt2": lambda m, p: export_pt2(m, TINY_SHAPE, p),
        "torchscript": lambda m, p: export_torchscript(m, TINY_SHAPE, p),
    }
    with pytest.raises(ExportError, match="max abs difference"):
        exporters[fmt](NoisyCNN(), tmp_path / f"noisy.{fmt}")


def test_unchecked_export_skips_the_comparison(tmp_path: Path) -> None:
    export_onnx(NoisyCNN(), TINY_SHAPE, check=False)
    export_torchscript(NoisyCNN(), TINY_SHAPE, tmp_path / "noisy.pt", check=False)
    assert (tmp_path / "noisy.pt").exists()


def test_export_restores_the_training_mode(tmp_path: Path, tiny: nn.Module) -> None:
    tiny.train()
    tiny.get_submodule("bn_a").eval()  # a mixed state must come back as it was

    export_model(tiny, TINY_SHAPE, "torchscript", tmp_path / "m.pt")

    assert tiny.training and tiny.get_submodule("stem").training
    assert not tiny.get_submodule("bn_a").training


def test_unknown_format_lists_the_known_ones(tmp_path: Path, tiny: nn.Module) -> None:
    with pytest.raises(ExportError, match="onnx, pt2, torchscript"):
        export_model(tiny, TINY_SHAPE, "tflite", tmp_path / "m.tflite")


def test_unwritable_path_raises_export_error(tmp_path: Path, tiny: nn.Module) -> None:
    with pytest.raises(ExportError, match="cannot write"):
        export_onnx(tiny, TINY_SHAPE, tmp_path / "missing-dir" / "m.onnx")
