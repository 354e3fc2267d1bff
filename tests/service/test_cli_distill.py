"""--distill / --no-distill and the loss flags reach the spec; unsaid, compute_epochs decides."""

from __future__ import annotations

import pytest

from search.errors import SpecError
from service.cli import build_parser
from service.cli._prune_spec import prune_spec
from service.cli._submit import build_spec


def test_submit_puts_distill_in_the_spec_only_when_asked() -> None:
    def finetune(*flags: str) -> object:
        args = build_parser().parse_args(["submit", "--arch", "resnet20_cifar", *flags])
        return build_spec(args).get("finetune")

    assert finetune("--no-distill") == {"distill": False}
    assert finetune("--distill") == {"distill": True}
    assert finetune() is None  # the server's default: with compute_epochs


def test_prune_distills_by_default_only_with_a_compute_budget() -> None:
    def distills(*flags: str) -> bool:
        argv = ["prune", "--arch", "resnet20_cifar", "--dataset", "digits"]
        argv += ["--flops", "0.5", "--out", "x"]
        args = build_parser().parse_args([*argv, *flags])
        return bool(prune_spec(args, args.arch).distills)

    assert distills("--compute-epochs", "4")
    assert not distills("--compute-epochs", "4", "--no-distill")
    assert not distills("--trials", "4")
    assert distills("--trials", "4", "--distill")


def test_the_distillation_loss_flags_reach_the_spec_and_are_named_when_wrong() -> None:
    argv = ["prune", "--arch", "resnet20_cifar", "--dataset", "digits", "--flops", "0.5"]
    argv += ["--out", "x", "--compute-epochs", "4"]
    parser = build_parser()
    args = parser.parse_args([*argv, "--distill-weight", "0.9", "--distill-temperature", "2"])
    finetune = prune_spec(args, args.arch).finetune
    assert (finetune.distill_weight, finetune.distill_temperature) == (0.9, 2.0)
    unsaid = prune_spec(parser.parse_args(argv), "resnet20_cifar").finetune
    assert (unsaid.distill_weight, unsaid.distill_temperature) == (0.5, 4.0)
    with pytest.raises(SpecError, match="--distill-weight"):
        prune_spec(parser.parse_args([*argv, "--distill-weight", "1.5"]), "resnet20_cifar")
    submitted = build_parser().parse_args(
        ["submit", "--arch", "resnet20_cifar", "--distill-weight", "0.9"]
    )
    assert build_spec(submitted).get("finetune") == {"distill_weight": 0.9}
