"""AGP magnitude pruning of LSTM/GRU input-to-hidden and hidden-to-hidden weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.data import load_dataset
from models.errors import ModelsError
from models.io import CheckpointInfo, load_pruned, save_pruned
from models.prune import AgpRecurrentMasking, Plan, agp_sparsity, magnitude_masks
from models.train import evaluate, fine_tune
from models.zoo import RecurrentClassifier, build_model

RECURRENT_WEIGHTS = ("weight_ih_l0", "weight_hh_l0")


def _zero_share(model: torch.nn.Module) -> list[float]:
    return [
        float((p == 0).float().mean())
        for name, p in model.named_parameters()
        if name.endswith(RECURRENT_WEIGHTS)
    ]


def test_agp_follows_the_cubic_from_start_to_end() -> None:
    assert agp_sparsity(0, 100, 0.8) == 0.0
    assert agp_sparsity(50, 100, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert agp_sparsity(100, 100, 0.8) == pytest.approx(0.8)
    assert agp_sparsity(250, 100, 0.8) == pytest.approx(0.8)
    assert agp_sparsity(10, 100, 0.8, start_step=20, initial=0.1) == pytest.approx(0.1)
    curve = [agp_sparsity(t, 100, 0.8) for t in range(101)]
    assert curve == sorted(curve)


@pytest.mark.parametrize("bad", [{"final": 1.0}, {"final": 0.5, "initial": 0.6}])
def test_impossible_sparsities_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ModelsError):
        agp_sparsity(0, 10, **bad)  # type: ignore[arg-type]


def test_masks_remove_the_smallest_weights_of_each_matrix_only() -> None:
    torch.manual_seed(0)
    model = RecurrentClassifier("lstm", 3, 5, [8, 8])
    masks = magnitude_masks(model, 0.25)
    assert set(masks.masks) == {f"layers.{k}.{w}" for k in (0, 1) for w in RECURRENT_WEIGHTS}
    for path, keep in masks.masks.items():
        weight = model.get_parameter(path).detach().abs()
        assert int((~keep).sum()) == round(0.25 * weight.numel())
        assert weight[~keep].max() <= weight[keep].min()
    fc_before, bias_before = model.fc.weight.clone(), model.layers[0].bias_ih_l0.clone()
    masks.apply(model)
    assert _zero_share(model) == [pytest.approx(0.25, abs=0.01)] * 4
    assert torch.equal(model.fc.weight, fc_before)
    assert torch.equal(model.layers[0].bias_ih_l0, bias_before)


def test_training_with_agp_ends_at_the_final_sparsity_and_still_learns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits_seq", input_shape=(8, 8), seed=0)
    model = build_model("gru_classifier_1x32", 10, (8, 8))
    masking = AgpRecurrentMasking(model, 0.7, end_step=100, every=10)

    fine_tune(model, data.train, steps=150, lr=0.05, on_step=masking)

    assert _zero_share(model) == [pytest.approx(0.7, abs=0.01)] * 2
    assert masking.masks.sparsity() == pytest.approx(0.7, abs=0.01)
    assert evaluate(model, data.val).top1 > 0.4
    # zeros are weights like any other: the checkpoint keeps them
    info = CheckpointInfo("gru_classifier_1x32", 10, (8, 8), Plan())
    loaded, _ = load_pruned(save_pruned(model, tmp_path / "sparse.safetensors", info))
    assert _zero_share(loaded) == _zero_share(model)


def test_a_model_without_recurrent_layers_is_refused() -> None:
    with pytest.raises(ModelsError, match="no LSTM, GRU or RNN"):
        magnitude_masks(build_model("tiny_cnn", 10, (3, 16, 16)), 0.5)


def test_the_sparse_cost_counts_zero_recurrent_weights_once_per_time_step() -> None:
    from models.cost import measure_cost, measure_sparse_cost

    torch.manual_seed(0)
    model = RecurrentClassifier("gru", 3, 5, [8, 8])
    dense = measure_sparse_cost(model, (6, 5))
    assert (dense.nonzero_params, dense.effective_macs) == (dense.params, dense.macs)
    masks = magnitude_masks(model, 0.5)
    masks.apply(model)
    zeros = sum(int((~keep).sum()) for keep in masks.masks.values())

    sparse = measure_sparse_cost(model, (6, 5))

    assert sparse.macs == measure_cost(model, (6, 5)).macs == dense.macs  # dense runtimes
    assert sparse.nonzero_params == sparse.params - zeros
    assert sparse.effective_macs == sparse.macs - 6 * zeros
