"""ONNX in: a CNN's graph rebuilt as a prunable torch module, nothing in it executed;
bad files refused with what is wrong."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.cost import measure_cost
from models.errors import WeightsError
from models.io import check_against_onnxruntime, import_onnx, onnx_model_bytes
from models.prune import apply_plan, build_pruning_graph, uniform_plan
from models.zoo import build_model
from tests.search.test_user_model import TwoBranchNet


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (TwoBranchNet(10), (3, 16, 16)),  # residual add, depthwise conv, concat, Gemm
        (build_model("mobilenet_v2", 10, (3, 32, 32)), (3, 32, 32)),  # Clip (ReLU6)
    ],
    ids=["two_branch", "mobilenet_v2"],
)
def test_an_exported_cnn_comes_back_prunable_with_the_same_outputs(
    model: torch.nn.Module, shape: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    model.eval()
    data = onnx_model_bytes(model, shape)
    imported = import_onnx(data)
    assert imported.input_shape == shape and imported.num_classes == 10
    assert check_against_onnxruntime(data, imported) < 1e-4
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(imported.model(x), model(x), rtol=1e-4, atol=1e-4)
    # pruned by the same engine; the narrower model runs and exports
    graph = build_pruning_graph(imported.model, shape, round_to=4)
    assert graph.groups
    plan = uniform_plan(graph, 0.5)
    pruned = apply_plan(imported.model, plan, "l1", input_shape=shape, graph=graph)
    assert measure_cost(pruned, shape).macs < 0.5 * measure_cost(imported.model, shape).macs
    assert pruned(x).shape == (3, 10)
    assert import_onnx(onnx_model_bytes(pruned, shape)).num_classes == 10


def _graph(nodes: list[onnx.NodeProto], initializers: list[TensorProto]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _conv_weight(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name)


def test_unknown_operators_are_refused_by_name_before_anything_is_built() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Erf", ["c"], ["e"]),
        helper.make_node("Softsign", ["e"], ["y"]),
    ]
    data = _graph(nodes, [_conv_weight("w", (4, 3, 3, 3))])
    with pytest.raises(WeightsError, match="unsupported ONNX operators: Erf, Softsign; a model"):
        import_onnx(data)


def test_malformed_huge_and_external_models_are_refused() -> None:
    with pytest.raises(WeightsError, match="not a valid ONNX model"):
        import_onnx(b"\x08\x07 this is not protobuf")
    with pytest.raises(WeightsError, match="not a valid ONNX model"):
        # a node reading a value nothing produces
        import_onnx(_graph([helper.make_node("Relu", ["nowhere"], ["y"])], []))
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[60_000_000])
    # its size is read from the dims, before any data is
    with pytest.raises(WeightsError, match="initializer 'w' holds 60,000,000 values"):
        from models.io._onnx_import import _initializers

        _initializers(helper.make_graph([], "g", [], [], [huge]))
    external = _conv_weight("w", (4, 3, 3, 3))
    external.data_location = TensorProto.EXTERNAL
    external.ClearField("raw_data")
    external.external_data.add(key="location", value="weights.bin")
    with pytest.raises(WeightsError, match="stored outside the file"):
        from models.io._onnx_import import _initializers

        _initializers(helper.make_graph([], "g", [], [], [external]))
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(WeightsError, match="nodes; at most 0"):
        import_onnx(_graph(nodes, []), max_nodes=0)


def test_folded_batchnorms_come_back_as_identities_that_recalibrate() -> None:
    from models.data import load_dataset
    from models.io import unfold_batchnorm
    from models.train import recalibrate_batchnorm

    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = TwoBranchNet(10).eval()
    imported = import_onnx(onnx_model_bytes(model, shape))  # the export folded its BNs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in imported.model.modules())
    data = load_dataset("synthetic", input_shape=shape)
    x = next(data.val.batches(16))[0]
    with torch.no_grad():
        before = imported.model(x)
    added = unfold_batchnorm(imported.model, data.train.batches(32, limit=4))
    assert added == 5  # every convolution: stem, residual, depthwise and both branches
    with torch.no_grad():
        torch.testing.assert_close(imported.model(x), before, rtol=1e-4, atol=1e-4)
    assert unfold_batchnorm(imported.model, data.train.batches(32, limit=1)) == 0  # once
    # a pruned candidate's BatchNorms re-estimate their statistics
    graph = build_pruning_graph(imported.model, shape, round_to=4)
    plan = uniform_plan(graph, 0.5)
    pruned = apply_plan(imported.model, plan, "l1", input_shape=shape, graph=graph)
    norms = [m for m in pruned.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 5
    stale = norms[0].running_mean.clone()
    recalibrate_batchnorm(pruned, data.train, batches=2)
    assert not torch.equal(stale, norms[0].running_mean)


def test_nodes_missing_what_their_operator_needs_are_refused_not_crashed() -> None:
    # a MaxPool without its kernel_shape, and an initializer whose data do not fit its dims
    nodes = [helper.make_node("MaxPool", ["x"], ["y"])]
    with pytest.raises(WeightsError, match="not a valid ONNX model|cannot be rebuilt"):
        import_onnx(_graph(nodes, []))
    damaged = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    damaged.raw_data = b"\x00" * 7
    from models.io._onnx_import import _initializers

    with pytest.raises(WeightsError, match="initializer 'w' is damaged"):
        _initializers(helper.make_graph([], "g", [], [], [damaged]))
