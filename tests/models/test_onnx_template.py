"""The ONNX template: a candidate's latency graph made from the unpruned model's export
with the candidate's tensors, checked, and refused wherever it does not fit."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.io import OnnxTemplate, onnx_model_bytes
from models.prune import apply_plan, build_pruning_graph, remove_blocks, uniform_plan
from models.zoo import build_model

SHAPE = (3, 16, 16)


def _logits(data: bytes, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": x.numpy()})
    return np.asarray(out)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", num_classes=10, input_shape=SHAPE)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


def _half_width(model: nn.Module) -> tuple[nn.Module, bytes]:
    """Return ``model`` with half of every group's channels, and its graph from the
    template of ``model``."""
    graph = build_pruning_graph(model, SHAPE, round_to=4)
    candidate = apply_plan(model, uniform_plan(graph, 0.5), input_shape=SHAPE, graph=graph)
    template = OnnxTemplate.of(model, SHAPE)
    assert template is not None
    data = template.bytes_for(candidate)
    assert data is not None
    return candidate, data


def test_a_pruned_candidate_gets_the_graph_its_own_export_would_compute(resnet: nn.Module) -> None:
    candidate, data = _half_width(resnet)
    x = torch.randn(3, *SHAPE)  # a batch of 3: the batch dimension stays dynamic
    exported = _logits(onnx_model_bytes(candidate, SHAPE), x)
    np.testing.assert_allclose(_logits(data, x), exported, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        np.testing.assert_allclose(_logits(data, x), candidate(x).numpy(), rtol=1e-4, atol=1e-4)
    # the candidate's narrower tensors, under the names of its state_dict
    shapes = {t.name: tuple(t.dims) for t in onnx.load_from_string(data).graph.initializer}
    name = "layer1.0.conv1.weight"
    assert shapes[name] == tuple(candidate.state_dict()[name].shape)
    assert shapes[name] != tuple(resnet.state_dict()[name].shape)


def test_a_candidate_without_some_blocks_gets_the_graph_without_them(resnet: nn.Module) -> None:
    graph = build_pruning_graph(resnet, SHAPE, round_to=4)
    narrower = apply_plan(resnet, uniform_plan(graph, 0.25), input_shape=SHAPE, graph=graph)
    shallower = remove_blocks(narrower, [graph.blocks[0], graph.blocks[-1]])
    template = OnnxTemplate.of(resnet, SHAPE)
    assert template is not None
    data = template.bytes_for(shallower)
    assert data is not None
    x = torch.randn(3, *SHAPE)
    exported = onnx_model_bytes(shallower, SHAPE)
    np.testing.assert_allclose(_logits(data, x), _logits(exported, x), rtol=1e-4, atol=1e-4)
    convs = sum(node.op_type == "Conv" for node in onnx.load_from_string(data).graph.node)
    full = sum(node.op_type == "Conv" for node in onnx.load_from_string(exported).graph.node)
    assert convs == full  # the exporter's own graph of the shallower model has as many
    assert convs == sum(isinstance(m, nn.Conv2d) for m in resnet.modules()) - 4
    names = {t.name for t in onnx.load_from_string(data).graph.initializer}
    assert not any(name.startswith(f"{graph.blocks[0]}.") for name in names)


def test_a_candidate_missing_layers_some_other_way_is_exported_instead(resnet: nn.Module) -> None:
    graph = build_pruning_graph(resnet, SHAPE, round_to=4)
    changed = copy.deepcopy(resnet)
    changed.set_submodule(graph.blocks[0], nn.Sequential())  # passes x on, but not Identity
    template = OnnxTemplate.of(resnet, SHAPE)
    assert template is not None
    assert template.bytes_for(changed) is None
    assert template.usable  # a model it does not fit says nothing against the template
    assert template.bytes_for(resnet) is not None


class _FlattenedByView(nn.Module):
    """A net whose forward bakes its width into a reshape: the exporter writes the
    number into the graph, so the graph fits this width only."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).reshape(-1, self.width * 16 * 16))


def test_a_graph_that_computes_something_else_is_refused_and_not_used_again() -> None:
    template = OnnxTemplate.of(_FlattenedByView(8).eval(), SHAPE)
    assert template is not None  # every initializer is a model tensor
    assert template.bytes_for(_FlattenedByView(4).eval()) is None  # the baked 8 * 16 * 16
    assert not template.usable
    assert template.bytes_for(_FlattenedByView(8).eval()) is None  # no longer trusted


def test_an_unchecked_graph_is_checked_by_whoever_runs_it(resnet: nn.Module) -> None:
    graph = build_pruning_graph(resnet, SHAPE, round_to=4)
    candidate = apply_plan(resnet, uniform_plan(graph, 0.5), input_shape=SHAPE, graph=graph)
    template = OnnxTemplate.of(resnet, SHAPE)
    assert template is not None
    data = template.bytes_for(candidate, checked=False)
    assert data is not None
    x = torch.randn(2, *SHAPE).numpy()
    check = template.output_check(candidate)
    assert check(x, _logits(data, torch.from_numpy(x)))
    other = copy.deepcopy(candidate)
    with torch.no_grad():
        other.get_parameter("fc.bias").add_(1.0)  # another model: its logits are not these
    assert not template.output_check(other)(x, _logits(data, torch.from_numpy(x)))
    assert not check(x[:1], _logits(data, torch.from_numpy(x)))  # nor another batch's
    assert template.usable  # until its user says the check failed
    template.discard("its graph was refused")
    assert not template.usable
    assert template.bytes_for(candidate, checked=False) is None


def _optimized_ops(data: bytes, folder: Path) -> Counter[str]:
    """Return the op types of the graph onnxruntime runs for ``data`` (all
    optimizations, as latency is measured)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(folder / "optimized.onnx").graph.node)


def test_onnxruntime_runs_the_same_graph_as_for_the_exporters_own(
    resnet: nn.Module, tmp_path: Path
) -> None:
    """The template keeps BatchNorm apart (the exporter folds it into the convolutions);
    onnxruntime folds it when it loads the graph, so what is timed is the same."""
    candidate, data = _half_width(resnet)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = _optimized_ops(data, tmp_path / "a")
    assert "BatchNormalization" not in ours
    assert ours == _optimized_ops(onnx_model_bytes(candidate, SHAPE), tmp_path / "b")
