"""``inferprune sensitivity``: a table, a plan at the budget, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search import Sensitivity
from service.cli import main

ARGS = [
    "--arch",
    "tiny_cnn",
    "--input-shape",
    "3,16,16",
    "--dataset",
    "synthetic",
    "--round-to",
    "4",
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_cnn trained briefly on the synthetic set, as a checkpoint file."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    assert (
        main(
            [
                "train",
                *ARGS[:-2],
                "--epochs",
                "2",
                "-o",
                str(path),
                "--json",
            ]
        )
        == 0
    )
    return path


def test_json_holds_the_scan_and_the_plan_at_the_budget(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    png = tmp_path / "sensitivity.png"
    code = main(
        ["sensitivity", *ARGS, "--weights", str(weights), "--flops", "0.5", "--json"]
        + ["--png", str(png)]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    scan = Sensitivity.from_dict(out["sensitivity"])
    assert scan.groups and all(g.points for g in scan.groups)
    plan, uniform = out["plan"], out["uniform"]
    assert set(plan) == set(uniform) == {g.name for g in scan.groups}
    assert all(plan[g.name] <= g.channels for g in scan.groups)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_names_every_group_and_the_plans(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["sensitivity", *ARGS, "--weights", str(weights), "--flops", "0.5"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "", "tables go to stderr"
    for text in ("keep ~75%", "max drop", "uniform", "by sensitivity", "MACs"):
        assert text in captured.err


def test_without_a_budget_there_is_no_plan(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["sensitivity", *ARGS, "--weights", str(weights), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"] is None


def test_weights_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sensitivity", *ARGS])
    assert "--weights" in capsys.readouterr().err
