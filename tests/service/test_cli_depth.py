"""--depth / --no-depth: the flag reaches the spec, and a refusal names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser
from service.cli._submit import build_spec
from tests.service.conftest import run_cli


def test_submit_puts_depth_in_the_spec_only_when_asked() -> None:
    def pruning(*flags: str) -> object:
        args = build_parser().parse_args(["submit", "--arch", "resnet20_cifar", *flags])
        return build_spec(args).get("pruning")

    assert pruning("--no-depth") == {"depth": False}
    assert pruning("--depth") == {"depth": True}
    assert pruning() is None  # the server's default: depth where the spec allows it


def test_prune_refuses_depth_with_a_gradual_schedule_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "prune", "--arch", "tiny_cnn", "--dataset", "synthetic", "--flops", "0.5",
        "--trials", "2", "--final-epochs", "1", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    status, _, err = run_cli(capsys, *argv, "--depth", "--schedule", "agp")
    assert status == 1 and "--depth" in err and "pruning.depth" not in err
    assert not (tmp_path / "out").exists()


def test_groups_lists_the_removable_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "groups", "--arch", "resnet20_cifar", "--json")
    assert status == 0 and '"removable_blocks"' in out and '"layer3.2"' in out
