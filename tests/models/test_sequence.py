"""Hybrid sequences: steps in order, unread columns cut, checkpoints and exports exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from models.cost import measure_sparse_cost
from models.errors import ModelsError, WeightsError
from models.io import CheckpointInfo, export_onnx, load_pruned, save_pruned
from models.prune import (
    KernelMasks,
    PruningStep,
    apply_sequence,
    build_pruning_graph,
    cut_dead_channels,
    uniform_plan,
    zero_kernels,
)

SHAPE = (3, 16, 16)


def _zeros_follow_masks(model: nn.Module, masks: KernelMasks) -> bool:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight
        assert isinstance(weight, torch.Tensor)
        kept = weight.detach().flatten(2).ne(0).any(2)
        if not torch.equal(kept, mask):
            return False
    return True


def test_channel_then_kernel_thins_the_narrower_model(tiny: nn.Module) -> None:
    steps = [PruningStep("channel", "l1", 0.5), PruningStep("kernel", "fpgm", 0.5)]

    result = apply_sequence(tiny, steps, input_shape=SHAPE)

    graph = build_pruning_graph(tiny, SHAPE)
    assert result.plan == uniform_plan(graph, 0.5)
    assert result.model.conv_a.weight.shape[:2] == (8, 8)
    assert result.masks["conv_a"].shape == (8, 8)
    assert int((~result.masks["conv_a"]).sum()) == 32
    assert _zeros_follow_masks(result.model, result.masks)


def test_kernel_then_channel_carries_each_mask_onto_the_channels_kept(tiny: nn.Module) -> None:
    steps = [PruningStep("kernel", "l1", 0.5), PruningStep("channel", "l2", 0.5)]

    result = apply_sequence(tiny, steps, input_shape=SHAPE)

    assert result.model.conv_a.weight.shape[:2] == (8, 8)
    assert set(result.masks) == {"stem.0", "conv_a", "conv_b", "down.0"}
    assert _zeros_follow_masks(result.model, result.masks)
    # the order matters: the same steps the other way round give another model
    other = apply_sequence(tiny, steps[::-1], input_shape=SHAPE)
    assert not torch.equal(other.model.conv_a.weight, result.model.conv_a.weight)


def test_a_sequence_leaves_the_input_model_alone(tiny: nn.Module) -> None:
    before = {k: v.clone() for k, v in tiny.state_dict().items()}

    apply_sequence(tiny, [PruningStep("kernel", "l1", 0.7)], input_shape=SHAPE)

    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


class Branches(nn.Module):
    """One conv read by two others; their sum goes to the classifier."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        z = self.conv2(y) + self.conv3(y)
        return self.fc(z.mean((2, 3)))


def _masks_without(columns2: list[int], columns3: list[int], width: int) -> KernelMasks:
    m2 = torch.ones(4, width, dtype=torch.bool)
    m3 = torch.ones(4, width, dtype=torch.bool)
    m2[:, columns2] = False
    m3[:, columns3] = False
    return KernelMasks({"conv2": m2, "conv3": m3})


def test_a_channel_no_filter_reads_is_cut_and_one_still_read_is_not() -> None:
    model = Branches().eval()
    masks = _masks_without([0, 1], [1], width=8)  # channel 0 is still read by conv3
    zero_kernels(model, masks)
    graph = build_pruning_graph(model, SHAPE, round_to=1)
    x = torch.randn(4, *SHAPE)

    cut, carried = cut_dead_channels(model, masks, graph)

    assert cut.conv1.out_channels == 7 and cut.conv2.in_channels == 7
    assert carried["conv2"].shape == (4, 7) and carried["conv2"][:, 0].tolist() == [False] * 4
    assert "conv3" not in carried  # its only removed column was the one cut
    with torch.no_grad():
        assert torch.allclose(cut(x), model(x), atol=1e-6)


def test_a_cut_keeps_the_width_a_multiple_of_round_to() -> None:
    model = Branches(width=16).eval()
    unread = list(range(9))
    masks = _masks_without(unread, unread, width=16)
    zero_kernels(model, masks)

    one_short, _ = cut_dead_channels(
        model, _masks_without([0], [0], 16), build_pruning_graph(model, SHAPE, round_to=8)
    )
    cut, carried = cut_dead_channels(model, masks, build_pruning_graph(model, SHAPE, round_to=8))

    assert one_short.conv1.out_channels == 16  # 15 is not a multiple of 8
    assert cut.conv1.out_channels == 8
    assert carried["conv2"].shape == (4, 8)
    assert int((~carried["conv2"]).any(0).sum()) == 1  # the ninth unread channel stays


def test_a_channel_an_unmasked_layer_reads_is_never_cut() -> None:
    model = Branches().eval()
    masks = KernelMasks({"conv2": _masks_without([1], [1], width=8)["conv2"]})
    zero_kernels(model, masks)

    cut, carried = cut_dead_channels(model, masks, build_pruning_graph(model, SHAPE, round_to=1))

    assert cut is model and carried == masks  # conv3 (ignored by the masks) still reads it


def _sparse(tiny: nn.Module) -> tuple[nn.Module, CheckpointInfo]:
    steps = [PruningStep("channel", "l1", 0.25), PruningStep("kernel", "l1", 0.6)]
    result = apply_sequence(tiny, steps, input_shape=SHAPE)
    info = CheckpointInfo(
        "tiny_cnn", 10, SHAPE, result.plan, extra={"job": "j1"}, kernel_masks=result.masks
    )
    return result.model, info


def test_a_sparse_checkpoint_round_trips_and_stores_only_kept_kernels(
    tmp_path: Path, tiny: nn.Module
) -> None:
    model, info = _sparse(tiny)
    path = save_pruned(model, tmp_path / "sparse.safetensors", info)

    loaded, got = load_pruned(path)

    assert got == info and got.kernel_masks == info.kernel_masks
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    stored = load_file(str(path))
    kept = int(info.kernel_masks["conv_a"].sum())
    assert stored["conv_a.weight"].shape == (kept, 3, 3)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["version"] == "2"
    assert len(meta["kernel_masks"]) < 600  # packed bits: a few hundred characters here


def test_a_checkpoint_whose_masks_do_not_fit_its_tensors_is_refused(
    tmp_path: Path, tiny: nn.Module
) -> None:
    model, info = _sparse(tiny)
    path = save_pruned(model, tmp_path / "sparse.safetensors", info)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    masks = json.loads(meta["kernel_masks"])
    bad = dict(meta, kernel_masks=json.dumps({**masks, "conv_a": [8, 8, "AA=="]}))
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=bad)
    tensors["conv_a.weight"] = tensors["conv_a.weight"][1:]
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)

    with pytest.raises(WeightsError, match="kernel mask of 'conv_a'"):
        load_pruned(tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="conv_a.weight"):
        load_pruned(tmp_path / "short.safetensors")


def test_the_onnx_export_of_a_sparse_model_matches_torch(tmp_path: Path, tiny: nn.Module) -> None:
    model, info = _sparse(tiny)
    path = save_pruned(model, tmp_path / "sparse.safetensors", info)
    loaded, _ = load_pruned(path)

    export_onnx(loaded, SHAPE, tmp_path / "sparse.onnx", atol=1e-5)  # raises on mismatch

    cost = measure_sparse_cost(loaded, SHAPE)
    assert cost.nonzero_params < cost.params and cost.effective_macs < cost.macs


@pytest.mark.parametrize(
    ("granularity", "criterion", "amount", "message"),
    [
        ("filter", "l1", 0.5, "granularity 'filter'"),
        ("kernel", "taylor", 0.5, "'taylor' cannot rank kernels"),
        ("channel", "nope", 0.5, "'nope' cannot rank channels"),
        ("kernel", "l1", 1.0, "amount"),
    ],
)
def test_bad_steps_are_refused(
    granularity: str, criterion: str, amount: float, message: str
) -> None:
    with pytest.raises(ModelsError, match=message):
        PruningStep(granularity, criterion, amount)
