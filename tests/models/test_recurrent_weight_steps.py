"""Weight steps of a hybrid sequence: magnitude pruning of LSTM/GRU weights at once
(:func:`models.prune.apply_sequence`), held while training
(:func:`models.prune.keep_recurrent_masked`), and reached along AGP during ``apply``'s
fine-tune (:func:`search.apply_once`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.data import load_dataset
from models.errors import ModelsError
from models.io import load_pruned, save_pruned
from models.prune import (
    AgpRecurrentMasking,
    PruningStep,
    apply_sequence,
    keep_recurrent_masked,
    recurrent_weights,
    zeroed_recurrent_masks,
)
from models.train import TrainProgress, fine_tune
from models.zoo import build_model
from search import apply_once


def _shares(model: torch.nn.Module) -> list[float]:
    return [float((w == 0).float().mean()) for w in recurrent_weights(model).values()]


def test_a_weight_step_takes_only_magnitude_and_names_it() -> None:
    with pytest.raises(ModelsError, match="cannot rank weights; choose one of l1"):
        PruningStep("weight", "l2", 0.5)
    assert PruningStep("weight", "l1", 0.5).to_dict()["granularity"] == "weight"


def test_a_weight_step_zeroes_the_amount_of_each_matrix_and_nothing_else() -> None:
    torch.manual_seed(0)
    model = build_model("lstm_classifier", 10, (8, 8))  # two layers: four matrices
    pruned = apply_sequence(model, [PruningStep("weight", "l1", 0.6)], input_shape=(8, 8))
    assert _shares(pruned.model) == [pytest.approx(0.6, abs=1e-3)] * 4
    assert torch.equal(pruned.model.fc.weight, model.fc.weight)  # the head stays dense
    assert torch.equal(pruned.model.layers[0].bias_hh_l0, model.layers[0].bias_hh_l0)
    assert _shares(model) == [0.0] * 4  # the input model is not touched
    # a second, smaller step keeps the zeros the first left: the matrices stay at 0.6
    again = apply_sequence(pruned.model, [PruningStep("weight", "l1", 0.3)], input_shape=(8, 8))
    assert _shares(again.model) == _shares(pruned.model)


def test_a_weight_step_on_a_model_without_recurrent_layers_names_kernel_steps() -> None:
    model = build_model("tiny_cnn", 10, (3, 16, 16))
    with pytest.raises(ModelsError, match="channel or kernel steps"):
        apply_sequence(model, [PruningStep("weight", "l1", 0.5)], input_shape=(3, 16, 16))


def test_zeros_stay_zero_while_held_and_the_hooks_leave_with_the_block() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits_seq", input_shape=(8, 8), seed=0)
    model = apply_sequence(
        build_model("gru_classifier_1x32", 10, (8, 8)),
        [PruningStep("weight", "l1", 0.5)],
        input_shape=(8, 8),
    ).model
    zeros = {p: ~m for p, m in zeroed_recurrent_masks(model).masks.items()}
    before = {p: w.detach().clone() for p, w in recurrent_weights(model).items()}

    with keep_recurrent_masked(model, zeroed_recurrent_masks(model)):
        fine_tune(model, data.train, steps=8, lr=0.5)

    assert not model.layers[0]._forward_pre_hooks
    for path, weight in recurrent_weights(model).items():
        assert bool((weight[zeros[path]] == 0).all())
        assert not torch.equal(weight[~zeros[path]], before[path][~zeros[path]])  # it trained


def test_agp_starts_from_the_zeros_the_model_has_and_holds_them() -> None:
    torch.manual_seed(0)
    model = apply_sequence(
        build_model("lstm_classifier_1x32", 10, (8, 8)),
        [PruningStep("weight", "l1", 0.4)],
        input_shape=(8, 8),
    ).model
    zeros = {p: w.detach() == 0 for p, w in recurrent_weights(model).items()}
    masking = AgpRecurrentMasking(model, 0.8, end_step=10)
    assert masking.initial == pytest.approx(0.4, abs=1e-3)
    data = load_dataset("digits_seq", input_shape=(8, 8), seed=0)
    fine_tune(model, data.train, steps=3, lr=0.5, on_step=masking)
    for path, weight in recurrent_weights(model).items():
        assert bool((weight[zeros[path]] == 0).all())
    assert 0.4 < min(_shares(model)) < 0.8


class _Recording(AgpRecurrentMasking):
    """The masking ``apply`` runs, recording after every step what is zero."""

    seen: list[tuple[int, list[float], dict[str, torch.Tensor]]] = []

    def __call__(self, progress: TrainProgress) -> None:
        super().__call__(progress)
        zeros = {p: w.detach() == 0 for p, w in recurrent_weights(self.model).items()}
        _Recording.seen.append((progress.step, _shares(self.model), zeros))


def test_apply_reaches_a_weight_step_along_agp_and_the_checkpoint_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Recording.seen = []
    monkeypatch.setattr("search.oneshot.AgpRecurrentMasking", _Recording)
    result = apply_once(
        arch="gru_classifier_1x32",
        weights=None,
        input_shape=(8, 8),
        dataset="digits_seq",
        finetune_epochs=2,
        lr=0.05,
        sequence=[PruningStep("weight", "l1", 0.7)],
        device="cpu",
    )

    seen, ramp = _Recording.seen, result.schedule["weights"]
    assert [step for step, _, _ in seen] == list(range(1, ramp["steps"] + 1))
    assert ramp["end_step"] == round(ramp["steps"] / 2) and ramp["initial_sparsity"] == 0.0
    quarter = seen[ramp["steps"] // 4 - 1][1]
    assert 0.0 < max(quarter) < 0.7  # on the way up the cubic
    assert seen[ramp["end_step"] - 1][1] == [pytest.approx(0.7, abs=1e-3)] * 2
    assert _shares(result.model) == [pytest.approx(0.7, abs=1e-3)] * 2
    for (_, _, earlier), (_, _, later) in zip(seen, seen[1:], strict=False):
        for path, zero in earlier.items():
            assert bool(later[path][zero].all())  # once removed, removed for good
    after = result.to_dict()["after"]
    assert after["nonzero_params"] < after["params"]
    path = save_pruned(result.model, tmp_path / "g.safetensors", result.info)
    loaded, _ = load_pruned(path)
    x = torch.randn(4, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
