"""A fine-tune trained in segments with an OptimizerCarry keeps its momentum: it ends
where one call ends; without the carry, or after a cut, momentum starts again."""

from __future__ import annotations

import copy

import torch

from models.data import load_dataset
from models.prune import apply_plan
from models.train import OptimizerCarry, fine_tune
from models.zoo import build_model

SHAPE = (3, 16, 16)


def _segments(model: torch.nn.Module, data: object, carry: OptimizerCarry | None) -> None:
    for start in (0, 4, 8):
        fine_tune(
            model, data, steps=4, lr=0.05, batch_size=32, start_step=start,
            lr_window=(start, 12), carry=carry,
        )  # fmt: skip


def test_segments_with_a_carry_train_as_one_call_and_without_it_do_not() -> None:
    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=SHAPE).train
    model = build_model("tiny_cnn", 10, SHAPE)
    whole, carried, restarted = (copy.deepcopy(model) for _ in range(3))

    fine_tune(whole, data, steps=12, lr=0.05, batch_size=32)
    carry = OptimizerCarry()
    _segments(carried, data, carry)
    _segments(restarted, data, None)

    assert carry.fresh == 1
    for a, b in zip(whole.state_dict().values(), carried.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(whole.state_dict().values(), restarted.state_dict().values(), strict=True)
    )


def test_a_physical_cut_starts_a_fresh_optimizer() -> None:
    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=SHAPE).train
    model = build_model("tiny_cnn", 10, SHAPE)
    carry = OptimizerCarry()
    fine_tune(model, data, steps=2, lr=0.05, batch_size=32, carry=carry)
    narrower = apply_plan(model, {"conv_a": 8}, input_shape=SHAPE)

    fine_tune(narrower, data, steps=2, lr=0.05, batch_size=32, start_step=2, carry=carry)

    assert carry.fresh == 2  # the old momentum has the old shapes
