"""``--schedule`` on apply, prune and submit: the plan reached along a pruning schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.io import load_pruned
from service.cli import build_parser, main
from service.cli._submit import build_spec
from tests.service.conftest import run_cli

APPLY = ["apply", "--arch", "tiny_cnn", "--input-shape", "3,16,16", "--ratio", "0.5"]
DATA = ["--dataset", "synthetic", "--finetune-epochs", "1"]


def test_apply_iterative_switches_criteria_and_ends_at_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.safetensors"
    schedule = ["--schedule", "iterative", "--schedule-steps", "2", "--criteria", "taylor,fpgm"]
    status, stdout, err = run_cli(capsys, *APPLY, *DATA, *schedule, "-o", str(out), "--json")
    assert status == 0, err
    result = json.loads(stdout)
    assert result["schedule"]["name"] == "iterative"
    assert [m["criterion"] for m in result["schedule"]["moves"]] == ["taylor", "fpgm"]
    model, info = load_pruned(out)
    assert info.plan.to_dict() == result["plan"]
    assert model.conv_a.out_channels == result["plan"]["conv_a"] == 8


def test_apply_without_a_schedule_is_one_shot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, stdout, _ = run_cli(capsys, *APPLY, "-o", str(tmp_path / "p.safetensors"), "--json")
    assert status == 0 and json.loads(stdout)["schedule"] == {"name": "one_shot"}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--schedule", "agp"], "--schedule agp prunes over the fine-tune: give --finetune-epochs"),
        ([*DATA, "--schedule", "adaptive"], "--max-accuracy-drop"),
        ([*DATA, "--schedule-steps", "3"], "--schedule-steps: one_shot prunes once"),
        ([*DATA, "--schedule", "dropnet", "--criteria", "l1"], "--criteria"),
        ([*DATA, "--schedule", "one_cycle", "--schedule-steps", "1"], "--schedule-steps"),
    ],
)
def test_apply_schedule_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    status, _, err = run_cli(capsys, *APPLY, *argv, "-o", str(tmp_path / "p.safetensors"))
    assert status == 1 and says in err
    assert "pruning." not in err and "budget." not in err  # flags, not spec fields


def test_unknown_schedules_and_criteria_are_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main([*APPLY, "--schedule", "gradual", "-o", "x.safetensors"])
    assert "--schedule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*APPLY, "--criteria", "taylor,fpgn", "-o", "x.safetensors"])
    err = capsys.readouterr().err
    assert "--criteria" in err and "fpgn" in err


def test_prune_delivers_the_plan_along_the_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "prune", "--arch", "tiny_cnn", "--input-shape", "3,16,16", "--dataset", "synthetic",
        "--flops", "0.5", "--steps-per-trial", "2", "--final-epochs", "1", "--round-to", "4",
        "--trials", "2", "--schedule", "agp", "--schedule-steps", "3", "--out", str(out),
    ]  # fmt: skip
    status, _, err = run_cli(capsys, *argv, "--json")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["best"]["schedule"]["name"] == "agp"
    _, info = load_pruned(out / "model.safetensors")
    assert {k: info.plan[k] for k in report["best"]["plan"]} == report["best"]["plan"]


def test_prune_schedule_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "prune", "--arch", "tiny_cnn", "--dataset", "synthetic", "--flops", "0.5",
        "--trials", "2", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    status, _, err = run_cli(capsys, *argv, "--schedule", "iterative", "--compute-epochs", "4")
    assert status == 1 and "--schedule iterative" in err and "--compute-epochs" in err
    status, _, err = run_cli(capsys, *argv, "--criteria", "taylor,fpgm")
    assert status == 1 and "--criteria" in err and "pruning.criteria" not in err


def test_submit_puts_the_schedule_in_the_spec() -> None:
    args = build_parser().parse_args(
        [
            "submit",
            "--arch",
            "resnet20_cifar",
            "--flops",
            "0.5",
            "--schedule",
            "iterative",
            "--schedule-steps",
            "4",
            "--criteria",
            "taylor,fpgm",
        ]  # fmt: skip
    )
    spec = build_spec(args)
    assert spec["pruning"] == {
        "schedule": "iterative",
        "schedule_steps": 4,
        "criteria": ["taylor", "fpgm"],
    }
    plain = build_spec(build_parser().parse_args(["submit", "--arch", "resnet20_cifar"]))
    assert "pruning" not in plain  # the server's default, one_shot
