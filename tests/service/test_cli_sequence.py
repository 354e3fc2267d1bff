"""``apply --sequence``: hybrid channel and kernel steps from a file; bad ones refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.io import export_onnx, load_pruned
from tests.service.conftest import run_cli, write_json

APPLY = ["apply", "--arch", "tiny_cnn", "--input-shape", "3,16,16"]
HYBRID = [
    {"granularity": "channel", "criterion": "l1", "amount": 0.5},
    {"granularity": "kernel", "criterion": "fpgm", "amount": 0.5},
]


def test_apply_sequence_prunes_channels_then_kernels_and_keeps_them_through_a_fine_tune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.safetensors"
    seq = write_json(tmp_path, HYBRID)
    data = ["--dataset", "synthetic", "--finetune-epochs", "1"]

    status, stdout, err = run_cli(
        capsys, *APPLY, "--sequence", seq, *data, "-o", str(out), "--json"
    )

    assert status == 0, err
    result = json.loads(stdout)
    model, info = load_pruned(out)
    assert model.conv_a.out_channels == result["plan"]["conv_a"] == 8
    mask = info.kernel_masks["conv_a"]
    assert mask.shape == (8, 8) and int((~mask).sum()) == 32
    assert bool((model.conv_a.weight[~mask] == 0).all())  # still zero after fine-tuning
    after = result["after"]
    assert after["nonzero_params"] < after["params"]
    assert after["effective_macs"] < after["macs"]
    assert json.loads(info.extra["sequence"]) == HYBRID
    export_onnx(model, (3, 16, 16), tmp_path / "p.onnx")  # checked against torch


def test_apply_ratio_with_a_sequence_runs_only_its_kernel_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.safetensors"
    seq = write_json(tmp_path, {"sequence": HYBRID})

    status, _, err = run_cli(capsys, *APPLY, "--ratio", "0.25", "--sequence", seq, "-o", str(out))

    assert status == 0, err
    model, info = load_pruned(out)
    assert model.conv_a.out_channels == 16  # the ratio, not the sequence's 0.5
    mask = info.kernel_masks["conv_a"]
    assert mask.shape == model.conv_a.weight.shape[:2]
    assert int((~mask).sum()) == mask.numel() // 2


@pytest.mark.parametrize(
    ("sequence", "says"),
    [
        ([{"granularity": "kernel", "criterion": "taylor", "amount": 0.5}], "step 1"),
        (
            [HYBRID[0], {"granularity": "kernel", "criterion": "l1", "amount": 1.5}],
            "step 2 amount",
        ),
        ([{"granularity": "filter", "criterion": "l1", "amount": 0.5}], "granularity"),
        ([], "non-empty list of steps"),
        ({"steps": []}, "non-empty list of steps"),
    ],
)
def test_bad_sequences_are_refused_naming_the_flag_and_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sequence: object, says: str
) -> None:
    seq = write_json(tmp_path, sequence)

    status, _, err = run_cli(capsys, *APPLY, "--sequence", seq, "-o", str(tmp_path / "p.st"))

    text = " ".join(err.split())  # the console wraps long lines
    assert status == 1
    assert f"--sequence {seq}" in text and says in text


def test_apply_needs_a_plan_a_ratio_or_a_sequence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, *APPLY, "-o", str(tmp_path / "p.st"))

    assert status == 1 and "--plan, --ratio or --sequence" in err


PRUNE = [
    "prune",
    *APPLY[1:],
    "--dataset",
    "synthetic",
    "--flops",
    "0.5",
    "--trials",
    "2",
    "--steps-per-trial",
    "2",
    "--final-epochs",
    "1",
    "--round-to",
    "4",
]


def test_prune_sequence_searches_widths_and_kernel_prunes_every_candidate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = write_json(tmp_path, [{"granularity": "kernel", "criterion": "l1", "amount": 0.5}])

    status, stdout, err = run_cli(
        capsys, *PRUNE, "--sequence", seq, "--out", str(tmp_path / "out"), "--json"
    )

    assert status == 0, err
    best = json.loads(stdout)["best"]
    assert best["nonzero_params"] < best["params"] and best["effective_macs"] < best["macs"]
    model, info = load_pruned(tmp_path / "out" / "model.safetensors")
    mask = info.kernel_masks["conv_a"]
    assert int((~mask).sum()) == mask.numel() // 2
    assert bool((model.conv_a.weight[~mask] == 0).all())


def test_prune_refuses_a_sequence_a_search_cannot_run_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = write_json(tmp_path, [HYBRID[0]])  # channel steps alone: the search does that

    status, _, err = run_cli(capsys, *PRUNE, "--sequence", seq, "--out", str(tmp_path / "out"))

    text = " ".join(err.split())
    assert status == 1 and "--sequence" in text and "add a kernel step" in text
    assert not (tmp_path / "out").exists()


def test_submit_sequence_puts_the_file_s_steps_in_the_job_spec(tmp_path: Path) -> None:
    from service.cli import build_parser
    from service.cli._submit import build_spec

    kernel = {"granularity": "kernel", "criterion": "l1", "amount": 0.5}
    seq = write_json(tmp_path, {"sequence": [kernel]})
    args = build_parser().parse_args(["submit", "--arch", "tiny_cnn", "--sequence", seq])

    assert build_spec(args)["pruning"]["sequence"] == [kernel]
