"""Depth: which residual blocks can go whole, found from the weights' roles alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from models.errors import PlanError
from models.prune import removable_blocks, remove_blocks
from models.zoo import build_model


def test_a_cifar_resnets_removable_blocks_are_the_ones_that_keep_the_shape() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    # each stage's first block of stages 2 and 3 downsamples through a projection
    assert removable_blocks(model, (3, 32, 32)) == [
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer3.1",
        "layer3.2",
    ]


def test_mobilenet_v2s_removable_blocks_are_its_inverted_residuals_with_a_shortcut() -> None:
    model = mobilenet_v2(num_classes=10)
    expected = [
        f"features.{i}"
        for i, block in enumerate(model.features)
        if getattr(block, "use_res_connect", False)
    ]
    assert expected  # the architecture has some
    assert removable_blocks(model, (3, 32, 32)) == expected


def test_a_plain_network_has_no_removable_block() -> None:
    assert removable_blocks(build_model("vgg11_cifar", 10, (3, 32, 32)), (3, 32, 32)) == []
    assert removable_blocks(build_model("tiny_cnn", 10, (1, 8, 8)), (1, 8, 8)) == []


def test_finding_blocks_changes_nothing_in_the_model() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    removable_blocks(model, (3, 32, 32))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_removing_a_block_equals_zeroing_its_branch() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    names = ["layer1.1", "layer2.2", "layer3.1"]
    zeroed = build_model("resnet20_cifar", 10, (3, 32, 32)).eval()
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name in names:  # the branch's last BatchNorm outputs exactly zero
            zeroed.get_submodule(f"{name}.bn2").weight.zero_()
            zeroed.get_submodule(f"{name}.bn2").bias.zero_()
    reduced = remove_blocks(model, names).eval()
    assert all(isinstance(reduced.get_submodule(n), nn.Identity) for n in names)
    assert not isinstance(model.get_submodule("layer1.1"), nn.Identity)  # a copy was changed
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(reduced(x), zeroed(x))


def test_removing_an_unknown_block_is_refused() -> None:
    model = build_model("resnet20_cifar", 10, (3, 32, 32))
    with pytest.raises(PlanError, match="layer9.0"):
        remove_blocks(model, ["layer9.0"])
