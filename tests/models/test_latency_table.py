"""The layer latency table: one-layer models, the kernels onnxruntime runs, fit, round trip.

Timings cannot be asserted here (a busy machine makes them flaky): the table's accuracy
on real networks is measured in ``benchmarks/latency_table.py``. Most tests build the
table with a fake timer whose "latency" is a model's memory traffic, which grows with
the channels the way a real one does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.cost import (
    LatencyTable,
    LayerShape,
    calibration_plans,
    fit_calibration,
    measure_onnx_latency,
    onnxruntime_channel_block,
    onnxruntime_timer,
)
from models.cost._onnx_network import read_network
from models.errors import ModelsError
from models.io import onnx_model_bytes
from models.prune import PruningGraph, apply_plan, build_pruning_graph, uniform_plan, validate_plan
from models.zoo import build_model
from tests.models._plans import random_plan

SHAPE = (3, 16, 16)
BLOCK = onnxruntime_channel_block()
needs_nchwc = pytest.mark.skipif(BLOCK == 1, reason="this CPU has no onnxruntime NCHWc kernels")


def traffic_ms(data: bytes) -> float:
    """A fake latency: the elements a one-layer model reads and writes, in microseconds."""
    model = onnx.load_from_string(data)
    dims = {
        t.name: numpy_helper.to_array(t).tolist()
        for t in model.graph.initializer
        if t.data_type == TensorProto.INT64
    }
    constants = sum(
        math.prod(dims[n.input[0]]) for n in model.graph.node if n.op_type == "ConstantOfShape"
    )
    io = sum(
        math.prod(d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in (*model.graph.input, *model.graph.output)
    )
    return 0.002 + 1e-6 * (constants + io)


class FakeTimer:
    """An OnnxTimer that records its calls and returns :func:`traffic_ms`."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, models: Sequence[bytes]) -> list[float]:
        self.calls.append(len(models))
        return [traffic_ms(m) for m in models]


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, PruningGraph]:
    model = build_model("resnet20_cifar", 10, SHAPE)
    return model, build_pruning_graph(model, SHAPE)


@pytest.fixture(scope="module")
def fake_table(resnet: tuple[nn.Module, PruningGraph]) -> LatencyTable:
    return LatencyTable.build(*resnet, FakeTimer())


LAYERS = [
    LayerShape("conv", 16, 24, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), function="Relu"),
    LayerShape("conv", 24, 24, 8, 8, (3, 3), (2, 2), (1, 1, 1, 1), groups=24, function="Clip"),
    LayerShape("conv", 8, 16, 8, 8, (1, 1), residual=True, function="Sigmoid"),
    LayerShape("linear", 40, 10),
    LayerShape("unary", 24, 24, 5, 7, function="SiLU"),
    LayerShape("unary", 24, 24, 5, 7, function="HardSwish"),
    LayerShape("add", 24, 24, 6, 6, function="Add"),
    LayerShape("scale", 24, 24, 6, 6),
    LayerShape("pool", 24, 24, 9, 9, (3, 3), (2, 2), (1, 1, 1, 1), function="MaxPool"),
    LayerShape("pool", 24, 24, 4, 4, function="GlobalAveragePool"),
]
BLOCKED = [
    LayerShape("conv", 32, 48, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), layout="nchwc", block=BLOCK),
    LayerShape("conv", 3, 16, 9, 9, (3, 3), (2, 2), (1, 1, 1, 1), layout="nchwc", block=BLOCK),
    LayerShape(
        "conv", 32, 32, 8, 8, (3, 3), padding=(1, 1, 1, 1), groups=32, layout="nchwc", block=BLOCK
    ),
    LayerShape("conv", 16, 32, 8, 8, function="Relu", residual=True, layout="nchwc", block=BLOCK),
    LayerShape("unary", 32, 32, 6, 6, function="Relu", layout="nchwc", block=BLOCK),
    LayerShape(
        "pool", 32, 32, 6, 6, (2, 2), (2, 2), function="MaxPool", layout="nchwc", block=BLOCK
    ),
    LayerShape("pool", 32, 32, 6, 6, function="GlobalAveragePool", layout="nchwc", block=BLOCK),
    LayerShape("reorder_in", 24, 24, 6, 6, block=BLOCK),
    LayerShape("reorder_out", 24, 24, 6, 6, block=BLOCK),
]


@pytest.mark.parametrize(
    "layer",
    LAYERS + [pytest.param(s, marks=needs_nchwc) for s in BLOCKED],
    ids=lambda s: s.key,
)
def test_a_one_layer_model_runs_and_gives_its_output_shape(layer: LayerShape) -> None:
    data = layer.to_onnx(batch_size=2)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(layer.input_shape(2), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == layer.output_shape(2)
    assert len(data) < 2000  # weights are ConstantOfShape nodes, not stored values


def test_layer_keys_name_every_field_and_round_trip() -> None:
    keys = {s.key for s in LAYERS + BLOCKED}
    assert len(keys) == len(LAYERS + BLOCKED)
    for shape in LAYERS + BLOCKED:
        again = LayerShape.from_dict(json.loads(json.dumps(shape.to_dict())))
        assert again == shape and again.key == shape.key
    with pytest.raises(ModelsError, match="unknown layer op"):
        LayerShape("deconv", 1, 1)


def test_measure_onnx_latency_gives_a_symbolic_batch_and_refuses_two_inputs() -> None:
    data = onnx_model_bytes(build_model("tiny_cnn", 10, SHAPE), SHAPE)
    latency = measure_onnx_latency(data, batch_size=3, warmup=1, repeats=5)
    assert latency.batch_size == 3 and latency.repeats == 5 and latency.median_ms > 0

    x, z = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "xz")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        "g",
        [x, z],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    two_inputs = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelsError, match="2 inputs"):
        measure_onnx_latency(two_inputs.SerializeToString(), repeats=1)


def test_layer_shapes_are_deduplicated_across_layers(
    resnet: tuple[nn.Module, PruningGraph],
) -> None:
    # the block sets how many channel counts a grid axis holds: fix it, not the host's
    shapes = LatencyTable.shapes_to_measure(*resnet, channel_block=16)
    keys = [s.key for s in shapes]
    assert len(keys) == len(set(keys))
    convs = [s for s in shapes if s.op == "conv"]
    layers = sum(1 for m in resnet[0].modules() if isinstance(m, nn.Conv2d))
    # resnet20's 19 convolutions come in a handful of configurations, so the 3x3 grids
    # of identical blocks are measured once, not once per layer
    assert len(convs) < layers * 16 / 2
    assert shapes == LatencyTable.shapes_to_measure(*resnet, channel_block=16)


def test_build_times_every_shape_in_one_call_of_the_timer(
    resnet: tuple[nn.Module, PruningGraph],
) -> None:
    timer = FakeTimer()
    table = LatencyTable.build(*resnet, timer, batch_size=2)
    assert timer.calls == [len(LatencyTable.shapes_to_measure(*resnet))]
    assert table.shape_count == timer.calls[0] and table.batch_size == 2
    assert table.untimed == {}
    # the reference shapes: an empty session, and weights streamed from memory
    assert table.overhead_ms == pytest.approx(
        traffic_ms(LayerShape("unary", 1, 1, function="Relu").to_onnx(2))
    )
    assert table.stream_ms_per_mib > 0


def test_a_linear_layer_streams_its_weights_inside_the_network(fake_table: LatencyTable) -> None:
    (linear,) = [(s, ms) for s, ms in fake_table.breakdown({}) if s.op == "linear"]
    shape, ms = linear
    weights_mib = shape.in_channels * shape.out_channels * 4 / 2**20
    assert ms >= weights_mib * fake_table.stream_ms_per_mib


def test_build_refuses_a_timer_that_loses_models(resnet: tuple[nn.Module, PruningGraph]) -> None:
    with pytest.raises(ModelsError, match="latencies for"):
        LatencyTable.build(*resnet, lambda models: [1.0] * (len(models) - 1))


def test_predictions_fall_as_the_plan_prunes_more(
    fake_table: LatencyTable, resnet: tuple[nn.Module, PruningGraph]
) -> None:
    graph = resnet[1]
    full = {g.name: g.channels for g in graph.groups}
    assert fake_table.predict({}) == fake_table.predict(full)
    predictions = [fake_table.predict(uniform_plan(graph, r)) for r in (0.0, 0.25, 0.5, 0.75)]
    assert predictions == sorted(predictions, reverse=True)
    assert predictions[-1] < 0.5 * predictions[0]


def onnxruntime_kernels(data: bytes) -> Counter[tuple[str, ...]]:
    """Count the kernels of onnxruntime's optimized graph, as the table names them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    kinds = {"ReorderInput": "reorder_in", "ReorderOutput": "reorder_out", "Gemm": "linear"}
    kinds |= {"Add": "Add", "Relu": "unary", "QuickGelu": "unary", "Mul": "Mul"}
    kinds |= {"MaxPool": "pool", "GlobalAveragePool": "pool", "Conv": "conv"}
    counts: Counter[tuple[str, ...]] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    for node in optimized.graph.node:
        if node.op_type in ("Flatten", "Reshape"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "FusedConv"):  # FusedConv: a plain one with its activation
            residual = len(node.input) > 3 and bool(node.input[3])
            activation = attrs.get("activation", b"").decode()
            counts[("conv", activation, str(residual))] += 1
        else:
            counts[(kinds.get(node.op_type, node.op_type),)] += 1
    return counts


class _TwoConvs(nn.Module):
    """A convolution whose input has ``cin`` channels, made by a dense one before it."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(8, cin, 1)
        self.second = nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cout, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.second(self.first(x))), 1))


@needs_nchwc
@pytest.mark.parametrize(
    ("cin", "cout", "groups"),
    [(c, 32, 1) for c in (6, 10, 12, 18, 20)]  # dense: narrow, unaligned, aligned
    + [(c, c, c) for c in (10, 12, 24)]  # depthwise
    + [(c, 2 * c, 2) for c in (16, 24, 32)],  # grouped
)
def test_the_table_knows_which_convolutions_onnxruntime_blocks(
    cin: int, cout: int, groups: int
) -> None:
    # onnxruntime blocks a convolution only where its channels suit NCHWc; elsewhere it
    # runs a plain one (and reorders around it): the table must know which, on this CPU
    shape = (8, 8, 8)
    model = _TwoConvs(cin, cout, groups)
    graph = build_pruning_graph(model, shape)
    table = LatencyTable.build(model, graph, FakeTimer())
    assert table_kernels(table, {}) == onnxruntime_kernels(onnx_model_bytes(model, shape))


def table_kernels(table: LatencyTable, plan: dict[str, int]) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for shape, _ in table.breakdown(plan):
        if shape.op == "conv":
            counts[("conv", shape.function, str(shape.residual))] += 1
        elif shape.op in ("add", "scale"):  # onnxruntime's Add or Mul (same-shaped or not)
            counts[(shape.function or "Mul",)] += 1
        else:
            counts[(shape.op,)] += 1
    return counts


@needs_nchwc
@pytest.mark.parametrize("arch", ["tiny_cnn", "resnet20_cifar", "mobilenet_v2", "efficientnet_b0"])
def test_the_table_runs_the_kernels_onnxruntime_runs(arch: str) -> None:
    # onnxruntime's NCHWc choices (padding, reorders, fused adds) are replayed per plan:
    # a new onnxruntime that decides otherwise fails here
    shape = (3, 32, 32)
    model = build_model(arch, 10, shape)
    graph = build_pruning_graph(model, shape)
    table = LatencyTable.build(model, graph, FakeTimer())
    for seed in range(3):
        plan = dict(random_plan(graph, seed)) if seed else {}
        pruned = apply_plan(model, plan, input_shape=shape, graph=graph)
        expected = onnxruntime_kernels(onnx_model_bytes(pruned, shape))
        assert table_kernels(table, plan) == expected, f"plan {seed}"


@needs_nchwc
@pytest.mark.parametrize("arch", ["resnet20_cifar", "mobilenet_v2"])
def test_the_table_runs_the_kernels_onnxruntime_runs_with_blocks_removed(arch: str) -> None:
    # a plan that removes blocks: the same network with their ops gone and the next
    # block reading the removed one's input (fusions and reorders at the gaps included)
    shape = (3, 32, 32)
    model = build_model(arch, 10, shape)
    graph = build_pruning_graph(model, shape)
    table = LatencyTable.build(model, graph, FakeTimer())
    assert table.knows_depth and graph.blocks
    rng = random.Random(0)
    removals = [list(graph.blocks), graph.blocks[:2], rng.sample(graph.blocks, 3)]
    for seed, removed in enumerate(removals):
        plan = dict(random_plan(graph, seed)) if seed else {}
        plan |= dict.fromkeys(removed, 0)
        pruned = apply_plan(model, plan, input_shape=shape, graph=graph)
        expected = onnxruntime_kernels(onnx_model_bytes(pruned, shape))
        assert table_kernels(table, plan) == expected, f"removed {removed}"
        assert table.predict_raw(plan) < table.predict_raw({k: v for k, v in plan.items() if v})


def test_removing_blocks_from_the_network_reroutes_their_readers(
    resnet: tuple[nn.Module, PruningGraph],
) -> None:
    model, graph = resnet
    network = read_network(model, graph, onnx_model_bytes(model, SHAPE))
    assert network.scoped
    first, second = graph.blocks[0], graph.blocks[1]  # consecutive blocks of one stage
    both = network.without([second, first])
    kept = [op for op in both.ops if op.op != "removed"]
    assert all(not op.inside(first) and not op.inside(second) for op in kept)
    assert len(both.ops) == len(network.ops)  # indices stay: one planner serves both
    block_input = next(op for op in network.ops if op.inside(first)).inputs[0]
    reader = next(op for op in kept if op.scope.startswith(graph.blocks[2]))
    assert reader.inputs == (block_input,)  # the third block reads the first one's input
    assert both.uses[block_input] == network.uses[block_input]
    with pytest.raises(ModelsError, match="no ops in block"):
        network.without(["layer9.9"])
    unscoped = dataclasses.replace(network, scoped=False)
    with pytest.raises(ModelsError, match="do not know their modules"):
        unscoped.without([first])


def test_a_prediction_is_near_the_measured_latency(resnet: tuple[nn.Module, PruningGraph]) -> None:
    model, graph = resnet
    timer = onnxruntime_timer(warmup=2, repeats=10)
    table = LatencyTable.build(model, graph, timer)
    plans = calibration_plans(graph, 3, seed=0) + [dict(random_plan(graph, 7))]
    measured = [
        measure_onnx_latency(
            onnx_model_bytes(apply_plan(model, p, input_shape=SHAPE, graph=graph), SHAPE),
            warmup=3,
            repeats=20,
        ).median_ms
        for p in plans
    ]
    fitted = table.fit(list(zip(plans[:3], measured[:3], strict=True)))
    # not a timing check (latency_table.py measures accuracy, on a quiet machine): it
    # catches a table off by a unit or a layer, 4x and more, whatever the machine's load
    assert 0.25 < fitted.predict(plans[3]) / measured[3] < 4.0


def test_a_table_round_trips_through_json(
    fake_table: LatencyTable, resnet: tuple[nn.Module, PruningGraph]
) -> None:
    graph = resnet[1]
    plans = [dict(random_plan(graph, seed)) for seed in range(5)]
    fitted = fake_table.fit([(p, 2.0 * fake_table.predict_raw(p) + 0.1) for p in plans])
    again = LatencyTable.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again.calibration == fitted.calibration
    assert [again.predict(p) for p in plans] == [fitted.predict(p) for p in plans]
    with pytest.raises(ModelsError, match="format"):
        LatencyTable.from_dict({"format": 0})


def test_fit_recovers_a_known_scale_and_offset(
    fake_table: LatencyTable, resnet: tuple[nn.Module, PruningGraph]
) -> None:
    plans = [dict(random_plan(resnet[1], seed)) for seed in range(4)]
    samples = [(p, 1.3 * fake_table.predict_raw(p) + 0.2) for p in plans]
    fitted = fake_table.fit(samples)
    assert fitted.calibration.scale == pytest.approx(1.3)
    assert fitted.calibration.offset_ms == pytest.approx(0.2)
    assert fitted.calibration.samples == 4
    assert fake_table.calibration.samples == 0  # the table itself is unchanged
    for plan, measured in samples:
        assert fitted.predict(plan) == pytest.approx(measured)


def test_fit_calibration_recovers_three_terms_and_drops_a_negative_one() -> None:
    kernels = [10.0, 6.0, 3.0, 8.0, 2.0, 5.0]
    weights = [4.0, 1.0, 2.0, 0.5, 3.0, 2.5]
    measured = [1.1 * k + 0.3 * w + 0.05 for k, w in zip(kernels, weights, strict=True)]
    fitted = fit_calibration(kernels, weights, measured)
    assert (fitted.scale, fitted.per_mb, fitted.offset_ms) == pytest.approx((1.1, 0.3, 0.05))

    no_weights = fit_calibration(
        kernels, weights, [1.2 * k - 0.1 * w for k, w in zip(kernels, weights, strict=True)]
    )
    assert no_weights.per_mb == 0.0 and no_weights.scale > 0
    assert fit_calibration([4.0], [1.0], [6.0]).scale == pytest.approx(1.5)
    with pytest.raises(ModelsError):
        fit_calibration([], [], [])


def test_calibration_plans_start_unpruned_and_are_valid_and_seeded(
    resnet: tuple[nn.Module, PruningGraph],
) -> None:
    graph = resnet[1]
    plans = calibration_plans(graph, 6, seed=3)
    assert len(plans) == 6
    assert plans[0] == {g.name: g.channels for g in graph.groups}
    for plan in plans:
        validate_plan(plan, graph)
    assert len({json.dumps(p, sort_keys=True) for p in plans}) == 6
    assert plans == calibration_plans(graph, 6, seed=3)
    assert plans != calibration_plans(graph, 6, seed=4)
    with pytest.raises(ModelsError):
        calibration_plans(graph, 0, seed=0)
