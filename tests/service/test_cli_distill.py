"""--distill / --no-distill: the flag reaches the spec; unsaid, compute_epochs decides."""

from __future__ import annotations

from service.cli import build_parser
from service.cli._prune import _spec
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
        return bool(_spec(args, args.arch).distills)

    assert distills("--compute-epochs", "4")
    assert not distills("--compute-epochs", "4", "--no-distill")
    assert not distills("--trials", "4")
    assert distills("--trials", "4", "--distill")
