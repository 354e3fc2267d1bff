"""The zoo builds what users name, with their classes and input shapes."""

from __future__ import annotations

import pytest
import torch

from models.errors import ModelsError, UnknownArchitectureError
from models.zoo import build_model, get_architecture, list_architectures, normalize_shape

REQUIRED = [
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
    "vgg11_cifar",
    "vgg16_cifar",
    "lenet5",
    "tiny_cnn",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "vgg16_bn",
    "densenet121",
    "efficientnet_b0",
]


def test_required_architectures_are_registered() -> None:
    names = {a.name for a in list_architectures()}
    assert set(REQUIRED) <= names


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("tiny_cnn", (1, 12, 12)),
        ("lenet5", (1, 28, 28)),
        ("lenet5", (3, 32, 32)),
        ("resnet20_cifar", (3, 32, 32)),
        ("resnet20_cifar", (1, 8, 8)),
        ("vgg11_cifar", (3, 32, 32)),
        ("resnet18", (1, 64, 64)),
    ],
)
def test_num_classes_and_input_shape_are_respected(arch: str, shape: tuple[int, int, int]) -> None:
    model = build_model(arch, num_classes=7, input_shape=shape)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        build_model("resnet20cifar")
    assert "resnet20_cifar" in str(info.value)


def test_too_small_input_is_refused_with_the_minimum() -> None:
    with pytest.raises(ModelsError, match="at least 32x32"):
        build_model("vgg16_cifar", 10, (3, 16, 16))


@pytest.mark.parametrize("text,expected", [("3,32,32", (3, 32, 32)), ("1x28x28", (1, 28, 28))])
def test_shapes_parse_from_text(text: str, expected: tuple[int, int, int]) -> None:
    assert normalize_shape(text) == expected


@pytest.mark.parametrize("bad", ["32", "1,3,32,32", "a,b,c", "0,32,32", "0,8"])
def test_bad_shapes_are_refused(bad: str) -> None:
    with pytest.raises(ModelsError):
        normalize_shape(bad)


def test_defaults_come_from_the_architecture() -> None:
    arch = get_architecture("lenet5")
    model = build_model("lenet5")
    out = model(torch.randn(1, *arch.default_input_shape))
    assert out.shape == (1, arch.default_num_classes)


def test_plugins_register_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from models.zoo import _registry

    class FakeEntryPoint:
        name = "plugin_net"

        def load(self):  # type: ignore[no-untyped-def]
            return lambda num_classes, shape: torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(shape[0] * shape[1] * shape[2], num_classes)
            )

    def fake_entry_points(group: str):  # type: ignore[no-untyped-def]
        return [FakeEntryPoint()] if group == "inferprune.models" else []

    monkeypatch.setattr(_registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(_registry, "_plugins_loaded", False)
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    del metadata
    model = build_model("plugin_net", 3, (1, 4, 4))
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    assert get_architecture("plugin_net").family == "plugin"


@pytest.mark.parametrize(
    "typo,meant",
    [
        ("resnt20", "resnet20_cifar"),  # a dropped letter, without the _cifar suffix
        ("resnet20", "resnet20_cifar"),
        ("resnet19", "resnet18"),  # a depth that does not exist: the nearest ones
        ("resnet19", "resnet20_cifar"),
        ("vgg17", "vgg16"),
        ("tinycnn", "tiny_cnn"),
    ],
)
def test_unknown_architecture_suggests_what_was_meant(typo: str, meant: str) -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        get_architecture(typo)
    assert meant in info.value.close
    assert len(info.value.close) <= 4
    assert "`inferprune groups --list`" in str(info.value)


def test_a_name_like_nothing_in_the_zoo_gets_no_suggestion() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        get_architecture("xyz")
    assert info.value.close == [] and "Did you mean" not in str(info.value)
