"""The engine commands behave as DESIGN.md promises: shapes of --json, files that load."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from models.io import load_pruned
from service.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "--json prints exactly one line"
    return json.loads(out[0])  # type: ignore[no-any-return]


def test_groups_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "groups", "--arch", "resnet20_cifar")
    assert result["arch"] == "resnet20_cifar"
    assert result["macs"] > 40_000_000 and result["params"] > 270_000
    first = result["groups"][0]
    assert set(first) >= {"name", "channels", "min_channels", "layers"}
    assert first["name"] == "conv1" and first["channels"] == 16 and "bn1" in first["layers"]


def test_groups_respects_classes_and_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    small = run_json(capsys, "groups", "--arch", "tiny_cnn", "--input-shape", "1,8,8")
    big = run_json(capsys, "groups", "--arch", "tiny_cnn", "--input-shape", "1,16,16")
    assert big["macs"] > 3 * small["macs"]
    wide = run_json(capsys, "groups", "--arch", "tiny_cnn", "--num-classes", "100")
    assert wide["params"] > big["params"]


def test_profile_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_json(capsys, "profile", "--arch", "tiny_cnn", "--repeats", "5", "--warmup", "1")
    assert set(result) >= {"macs", "params", "size_bytes", "latency_ms", "backend"}
    latency = result["latency_ms"]
    assert 0 < latency["p10"] <= latency["median"] <= latency["p90"]
    assert result["backend"] == "onnxruntime" and result["latency_device"] == "local"


@pytest.mark.slow
def test_train_apply_profile_export_flow(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = tmp_path / "base.safetensors"
    trained = run_json(
        capsys,
        "train",
        "--arch",
        "tiny_cnn",
        "--dataset",
        "synthetic",
        "--epochs",
        "3",
        "-o",
        str(base),
    )
    assert trained["test_accuracy"] > 0.5 and base.exists()

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv_a": 8, "down.0": 16}))
    pruned_path = tmp_path / "pruned.safetensors"
    applied = run_json(
        capsys,
        "apply",
        "--weights",
        str(base),
        "--plan",
        str(plan),
        "--criterion",
        "taylor",
        "--dataset",
        "synthetic",
        "--finetune-epochs",
        "1",
        "-o",
        str(pruned_path),
    )
    assert applied["after"]["macs"] < applied["before"]["macs"]
    assert applied["plan"]["conv_a"] == 8 and applied["plan"]["stem.0"] == 16
    assert applied["val_accuracy"] > 0.3

    profiled = run_json(
        capsys, "profile", "--pruned", str(pruned_path), "--repeats", "5", "--backend", "torch"
    )
    assert profiled["macs"] == applied["after"]["macs"]

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(pruned_path), "--format", "onnx", "-o", str(onnx_path)]) == 0
    model, info = load_pruned(pruned_path)
    x = torch.randn(3, *info.input_shape)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-4)


def test_apply_with_a_ratio_writes_a_loadable_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "p.safetensors"
    result = run_json(capsys, "apply", "--arch", "tiny_cnn", "--ratio", "0.5", "-o", str(out))
    model, info = load_pruned(out)
    assert info.plan.to_dict() == result["plan"]
    # 24 channels minus half is 12, rounded down to a multiple of 8 as Torch-Pruning does
    assert model.conv_a.out_channels == result["plan"]["conv_a"] == 8


def test_errors_are_one_line_and_actionable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["groups", "--arch", "resnet20cifar"]) == 1
    assert "did you mean resnet20_cifar" in capsys.readouterr().err.lower()
    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text('{"conv_a": 12}')
    code = main(
        [
            "apply",
            "--arch",
            "tiny_cnn",
            "--plan",
            str(bad_plan),
            "-o",
            str(tmp_path / "x.safetensors"),
        ]
    )
    assert code == 1
    assert "may keep 8, 16, 24" in capsys.readouterr().err
    code = main(
        [
            "apply",
            "--arch",
            "tiny_cnn",
            "--ratio",
            "0.5",
            "--criterion",
            "taylor",
            "-o",
            str(tmp_path / "x.safetensors"),
        ]
    )
    assert code == 1 and "needs calibration data" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["groups", "profile", "train", "apply", "export"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert len(capsys.readouterr().out) > 300
