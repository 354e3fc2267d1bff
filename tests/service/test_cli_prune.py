"""``inferprune prune``: one command from weights to a report, resumable after Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import search.runner
from models.io import load_pruned
from service.cli import main

ARGS = [
    "--arch",
    "tiny_cnn",
    "--input-shape",
    "3,16,16",
    "--dataset",
    "synthetic",
    "--flops",
    "0.5",
    "--steps-per-trial",
    "3",
    "--final-epochs",
    "0.5",
    "--round-to",
    "4",
]


def test_prune_writes_the_documented_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["prune", *ARGS, "--trials", "4", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip())
    report = json.loads((out / "report.json").read_text())
    assert summary["best"] == report["best"]
    for part in ("baseline", "best"):
        assert {
            "macs",
            "params",
            "latency_ms",
            "latency_p90_ms",
            "val_accuracy",
            "test_accuracy",
        } <= set(report[part])
    assert report["best"]["macs"] <= 0.5 * report["baseline"]["macs"]
    assert {"plan", "trial"} <= set(report["best"]) and report["pareto"]
    assert report["study"]["storage"].startswith("sqlite:///") and len(report["trials"]) == 4
    for name in ("model.safetensors", "model.onnx", "pareto.png"):
        assert (out / name).stat().st_size > 0
    model, info = load_pruned(out / "model.safetensors")
    assert info.plan.to_dict() == report["best"]["plan"] | {
        k: v for k, v in info.plan.items() if k not in report["best"]["plan"]
    }


def test_ctrl_c_keeps_the_trials_and_a_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    real = search.runner.run_trial
    calls = {"n": 0}

    def interrupt_third(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(search.runner, "run_trial", interrupt_third)
    assert main(["prune", *ARGS, "--trials", "4", "--out", str(out)]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    partial = json.loads((out / "report.json").read_text())
    assert partial["status"] == "interrupted" and partial["best"] is None
    assert [t["state"] for t in partial["trials"]] == ["complete", "complete", "fail"]

    monkeypatch.setattr(search.runner, "run_trial", real)
    assert main(["prune", *ARGS, "--trials", "4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "succeeded"
    finished = [t for t in report["trials"] if t["state"] in ("complete", "pruned")]
    assert len(finished) == 4 and report["trials"][0]["plan"] == partial["trials"][0]["plan"]


def test_a_budget_no_plan_meets_is_refused_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a if a != "0.5" else "0.01" for a in ARGS]
    assert main(["prune", *args, "--trials", "2", "--out", str(tmp_path)]) == 1
    assert "smallest plan still needs" in capsys.readouterr().err


def test_invalid_spec_values_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "prune",
            "--arch",
            "tiny_cnn",
            "--dataset",
            "synthetic",
            "--trials",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1 and "needs a budget" in capsys.readouterr().err


def test_a_prune_that_fails_before_any_trial_leaves_no_out_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [a if a != "synthetic" else "cifar10" for a in ARGS]
    code = main(["prune", *args, "--data-root", str(tmp_path), "--trials", "2", "--out", str(out)])
    assert code == 1 and "--data-root" in capsys.readouterr().err
    assert not out.exists()


def test_a_large_accuracy_drop_is_reported_with_the_flags_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import search.lifecycle

    monkeypatch.setattr(search.lifecycle, "LARGE_ACCURACY_DROP", -1.0)  # any result warns
    out = tmp_path / "out"
    assert main(["prune", *ARGS, "--trials", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    text = " ".join((printed.out + printed.err).split())
    assert "warning: test accuracy fell" in text
    assert "--final-epochs, now 0.5" in text and "--flops (now 0.5)" in text
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"] and "finetune.final_epochs" in report["warnings"][0]
    assert "search-time" in text and "final" in text  # both accuracies, labelled


def test_compute_epochs_bounds_the_whole_job_and_names_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = ARGS.index("--steps-per-trial")
    base = ARGS[:at] + ARGS[at + 4 :]  # without --steps-per-trial 3 --final-epochs 0.5
    out = tmp_path / "out"
    assert main(["prune", *base, "--compute-epochs", "2", "--out", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    compute = report["compute"]
    assert compute["budget_epochs"] == 2.0 and compute["epochs"] <= 2.0 + 1e-6
    assert compute["final_from_trial"] == report["best"]["trial"]
    assert report["best"]["training_history"][-1]["stage"] == "final"
    assert not (out / "checkpoints").exists(), "the rung checkpoints go once delivered"
    _, info = load_pruned(out / "model.safetensors")
    assert "rung 0" in info.extra["lineage"]
    # neither --trials nor --compute-epochs: the error says which flags to give
    capsys.readouterr()
    assert main(["prune", *base, "--out", str(tmp_path / "none")]) != 0
    error = capsys.readouterr().err
    assert "--trials" in error and "--compute-epochs" in error
    assert not (tmp_path / "none").exists()


def test_prune_onnx_prunes_a_model_file_and_writes_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    from models.io import import_onnx
    from tests.service.test_onnx_upload import SHAPE, user_model_onnx

    model = tmp_path / "mine.onnx"
    model.write_bytes(user_model_onnx())
    out = tmp_path / "run"
    argv = ["prune", "--onnx", str(model), "--dataset", "synthetic", "--flops", "0.5"]
    argv += ["--compute-epochs", "1", "--round-to", "4", "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best"]["macs"] <= 0.5 * summary["baseline"]["macs"]
    assert json.loads((out / "report.json").read_text())["arch"] == "onnx"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == list(SHAPE)
    assert import_onnx((out / "model.onnx").read_bytes()).num_classes == 10
    # a file that is not ONNX is named by its flag
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    argv = ["prune", "--onnx", str(bad), "--dataset", "synthetic", "--flops", "0.5"]
    assert main([*argv, "--compute-epochs", "1", "--out", str(tmp_path / "bad")]) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert "--onnx bad.onnx: not a valid ONNX model" in error
