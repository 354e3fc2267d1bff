"""depth_vs_width.py: which blocks go, and that removing one is zeroing its branch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from depth_vs_width import blocks_to_remove, kept_blocks  # noqa: E402

from models.prune import remove_blocks  # noqa: E402
from models.zoo import build_model  # noqa: E402


def test_kept_blocks_are_evenly_spread_and_start_with_the_first() -> None:
    assert kept_blocks(9, 3) == [0, 4, 8]
    assert kept_blocks(9, 5) == [0, 2, 4, 6, 8]
    assert kept_blocks(3, 1) == [0]
    assert kept_blocks(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="keep"):
        kept_blocks(3, 4)


def test_removing_a_block_computes_what_zeroing_its_branch_computes() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, (1, 28, 28)).eval()
    with torch.no_grad():  # the branches of the blocks that go: output exactly zero
        for stage in (model.layer1, model.layer2, model.layer3):
            for i in (1, 2):
                stage[i].bn2.weight.zero_()
                stage[i].bn2.bias.zero_()
    reduced = remove_blocks(model, blocks_to_remove(model, (1, 28, 28), keep=1)).eval()
    assert [type(b) for b in reduced.layer2] == [type(model.layer2[0]), nn.Identity, nn.Identity]
    assert isinstance(model.layer2[1], type(model.layer2[0]))  # the original is untouched
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(reduced(x), model(x))
