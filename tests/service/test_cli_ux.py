"""What a new user trips over: silent logs, spec names for flags, vague suggestions,
unlabelled accuracies, and a demo that leaves its token behind."""

from __future__ import annotations

import argparse
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.data import DATA_ROOT_ENV
from search.errors import BudgetUnreachableError
from search.spec import JobSpec
from service.cli import _console, _demo, main
from service.cli._console import progress_bar
from service.cli._flags import cli_text, flag_for, user_message, validation_message
from service.cli._job_view import best_text, print_job, print_pareto, watch_line

PRUNE = [
    "prune",
    "--arch",
    "tiny_cnn",
    "--input-shape",
    "3,16,16",
    "--dataset",
    "synthetic",
    "--steps-per-trial",
    "3",
    "--final-epochs",
    "0.5",
    "--round-to",
    "4",
    "--trials",
    "2",
]


class Clock:
    """A clock the progress lines read, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- progress where stdout is not a terminal ----------------------------------------------
def test_progress_in_a_log_is_one_line_per_trial_with_elapsed_and_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(_console, "_now", clock)
    log = io.StringIO()
    with progress_bar("searching", 30, stream=log, unit="trial") as bar:
        bar.update(0, completed=0, status="best feasible: —")
        for trial in range(1, 8):
            clock.now += 10.0
            bar.update(0, completed=trial, status=f"best feasible: trial {trial - 1}")
    lines = log.getvalue().splitlines()
    assert len(lines) == 8  # the start, then one per trial
    assert lines[0].startswith("searching: trial 0/30 done, best feasible: —")
    assert "ETA unknown" in lines[0]
    # 7 trials in 70 s: 23 left at 10 s each
    assert lines[-1] == (
        "searching: trial 7/30 done, best feasible: trial 6, elapsed 1m10s, ETA 3m50s"
    )
    assert all(re.search(r"ETA \S+", line) for line in lines)


def test_progress_of_many_steps_in_a_log_is_rate_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(_console, "_now", clock)
    log = io.StringIO()
    with progress_bar("final fine-tune", 3000, stream=log) as bar:
        for step in range(1, 1001):
            clock.now += 0.01
            bar.update(0, total=1000, completed=step, status=f"loss {1 / step:.3f}")
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # the first step, then every 10 %
    assert lines[5].startswith("final fine-tune: 500/1000 (50%), loss 0.002, elapsed 5s")
    assert lines[5].endswith("ETA 5s") and lines[-1].endswith("ETA 0s")


def test_a_slow_stretch_still_logs_and_a_stop_short_of_the_end_is_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(_console, "_now", clock)
    log = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with progress_bar("final fine-tune", 1000, stream=log) as bar:
            bar.update(0, completed=1)
            clock.now += 40.0  # longer than the heartbeat, within one 10 % step
            bar.update(0, completed=2)
            bar.update(0, completed=3)
            raise KeyboardInterrupt
    lines = log.getvalue().splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [
        "1/1000 (0%)",
        "2/1000 (0%)",
        "3/1000 (0%)",
    ]
    # 2 steps in 40 s: 997 to go at 0.05 a second
    assert lines[-1].endswith("elapsed 40s, ETA 5h32m (stopped)")


def test_prune_in_a_log_prints_progress_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*PRUNE, "--flops", "0.5", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^searching: .*2/2.*ETA", err, re.MULTILINE)
    assert re.search(r"^final fine-tune: .*ETA 0s", err, re.MULTILINE)


# -- errors name the flags the user typed -------------------------------------------------
def test_an_unreachable_budget_names_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*PRUNE, "--flops", "0.01", "--out", str(tmp_path / "out")]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert re.search(r"set --flops to at least 0\.\d{3}", err)
    assert "--round-to" in err
    assert "budget.flops" not in err and "round_to" not in err


def test_a_missing_data_root_names_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "no-data-here"))
    argv = [*PRUNE, "--flops", "0.5", "--out", str(tmp_path / "out")]
    argv[argv.index("synthetic")] = "cifar10"
    assert main(argv) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "cifar10 was not found under" in err
    assert f"set --data-root or ${DATA_ROOT_ENV} to the folder" in err
    assert "root=" not in err


def test_the_api_keeps_the_spec_field_names() -> None:
    error = BudgetUnreachableError(
        "set budget.flops to at least 0.122 (a smaller pruning.round_to ...)",
        fields=("budget.flops", "pruning.round_to"),
    )
    assert "set budget.flops to at least 0.122" in str(error)
    assert user_message(error) == "set --flops to at least 0.122 (a smaller --round-to ...)"


def test_a_field_becomes_a_flag_only_where_the_command_has_it() -> None:
    error = BudgetUnreachableError(
        "set budget.flops to at least 0.2 (a smaller pruning.round_to helps)",
        fields=("budget.flops", "pruning.round_to"),
    )
    only_round_to = argparse.Namespace(round_to=8)  # like `apply`: no --flops
    assert user_message(error, only_round_to) == (
        "set budget.flops to at least 0.2 (a smaller --round-to helps)"
    )
    assert flag_for("budget.flops", argparse.Namespace(flops=None)) == "--flops"
    assert flag_for("budget.flops", argparse.Namespace(spec=None)) is None
    assert flag_for("search.timeout_s") == "--timeout"
    # a longer name that starts like a field is left alone
    assert cli_text("budget.flops_x and budget.flops.") == "budget.flops_x and --flops."


def test_spec_validation_errors_name_the_flags() -> None:
    with pytest.raises(ValidationError) as bad:
        JobSpec.model_validate({"arch": "tiny_cnn", "budget": {"flops": 2.0}})
    assert validation_message(bad.value).startswith("--flops: ")
    with pytest.raises(ValidationError) as empty:
        JobSpec.model_validate({"arch": "tiny_cnn", "budget": {}})
    message = validation_message(empty.value)
    assert "set --flops (e.g. 0.5), --macs, --params, --latency-ms" in message
    assert "budget." not in message


def test_a_small_input_shape_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["groups", "--arch", "vgg16_cifar", "--input-shape", "3,16,16"]) == 1
    assert "pass a larger --input-shape" in " ".join(capsys.readouterr().err.split())


# -- an unknown architecture -------------------------------------------------------------
def test_an_unknown_architecture_points_to_the_list_and_the_likely_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["groups", "--arch", "resnt20"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Did you mean resnet20_cifar" in err
    assert "`inferprune groups --list` lists them all" in err and "--help" not in err
    assert main(["groups", "--list"]) == 0
    assert "resnet20_cifar" in capsys.readouterr().err


# -- accuracies say which they are; MACs have one unit ------------------------------------
BASELINE = {"macs": 40_000_000, "params": 270_000, "val_accuracy": 0.98}
SEARCHING: dict[str, Any] = {
    "id": "f" * 32,
    "status": "running",
    "spec": {"arch": "resnet20_cifar", "dataset": "digits", "budget": {"flops": 0.5}},
    "progress": {"trials_done": 3, "trials_total": 12, "eta_s": 30.0},
    "baseline": BASELINE,
    "best": {"trial": 7, "macs": 20_000_000, "val_accuracy": 0.878, "finalized": False},
}
FINISHED: dict[str, Any] = SEARCHING | {
    "status": "succeeded",
    "best": {
        "trial": 7,
        "macs": 20_000_000,
        "val_accuracy": 0.993,
        "test_accuracy": 0.990,
        "search_val_accuracy": 0.878,
        "finalized": True,
    },
}


def test_the_best_so_far_and_the_chosen_model_are_labelled_and_use_one_macs_unit() -> None:
    assert best_text(SEARCHING, short=True) == (
        "trial 7, 87.8% search-time val at 20.00M MACs (50%)"
    )
    assert best_text(FINISHED, short=True) == "trial 7, 99.3% final val at 20.00M MACs (50%)"
    assert "best feasible: trial 7, 87.8% search-time" in watch_line(SEARCHING)
    assert "chosen: trial 7, 99.3% final val" in watch_line(FINISHED)
    assert best_text(FINISHED) == (
        "final: 99.3% val, 99.0% test; search-time: 87.8% val; 20.00M MACs (50%) (trial 7)"
    )


def test_a_kernel_pruned_model_shows_its_effective_macs_and_non_zero_params() -> None:
    sparse = FINISHED["best"] | {
        "params": 100_000,
        "nonzero_params": 40_000,
        "effective_macs": 9_000_000,
    }
    assert best_text(FINISHED | {"best": sparse}).endswith(
        "20.00M MACs (50%), 9.00M effective MACs, 100.00k params, 40.00k non-zero (trial 7)"
    )


def test_status_and_pareto_tables_label_search_time_and_final_accuracy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_job(FINISHED)
    err = " ".join(capsys.readouterr().err.split())
    assert "final: 99.3% val, 99.0% test; search-time: 87.8% val" in err
    front = {
        "points": [
            {"trial": 7, "val_accuracy": 0.878, "macs": 20_000_000, "params": 1000},
            {"trial": 2, "val_accuracy": 0.70, "macs": 10_000_000, "params": 500},
        ],
        "best_trial": 7,
    }
    print_pareto(front, FINISHED["id"], FINISHED)
    err = capsys.readouterr().err
    assert "search-time" in err and "final" in err
    row = next(line for line in err.splitlines() if "chosen" in line)
    assert "87.80%" in row and "99.30%" in row and "20.00M MACs (50%)" in row


# -- the demo cleans up after itself ------------------------------------------------------
class _Process:
    def poll(self) -> int:
        return 0


class _Client:
    token = "ipk_live_token_never_to_be_left_behind"
    server = "http://127.0.0.1:1"

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"id": FINISHED["id"]}

    def pareto(self, job_id: str) -> dict[str, Any]:
        return {"points": [], "best_trial": 7}

    def download(self, job_id: str, path: Path, **kwargs: Any) -> Path:
        path.write_bytes(b"onnx")
        return path

    def pareto_png(self, job_id: str) -> bytes:
        return b"png"


def _fake_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, follow: Any) -> Path:
    """Run the demo's steps around fakes; return the folder temporary files go to."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def start(data_dir: Path, workers: int) -> tuple[_Process, _Client]:
        # as `inferprune serve` does: the URL and a live token in the data folder
        (data_dir / "client.json").write_text(json.dumps({"token": _Client.token}))
        return _Process(), _Client()

    def train(out: Path, epochs: float) -> tuple[Path, dict[str, float]]:
        (out / "baseline.safetensors").write_bytes(b"weights")
        (out / "baseline.onnx").write_bytes(b"onnx")
        return out / "baseline.safetensors", {"val": 0.98, "test": 0.97}

    monkeypatch.setattr(_demo, "_start_server", start)
    monkeypatch.setattr(_demo, "_stop_server", lambda process: None)
    monkeypatch.setattr(_demo, "_train_baseline", train)
    monkeypatch.setattr(_demo, "follow_job", follow)
    monkeypatch.setattr(_demo, "_onnx_accuracy", lambda path: (0.99, 360))
    monkeypatch.setattr(_demo, "_latency_alone", lambda baseline, pruned: (0.6, 0.42))
    return scratch


def test_the_demo_leaves_no_token_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = _fake_demo(monkeypatch, tmp_path, lambda client, job_id, **kw: FINISHED)
    out = tmp_path / "inferprune-demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert list(scratch.iterdir()) == []
    assert {p.name for p in out.iterdir()} == {
        "baseline.safetensors",
        "baseline.onnx",
        "model.onnx",
        "pareto.png",
        "job.json",
    }
    assert not any(_Client.token.encode() in p.read_bytes() for p in out.iterdir())
    err = " ".join(capsys.readouterr().err.split())
    assert "final val accuracy" in err and "search-time val accuracy" in err
    assert "99.00% test accuracy (the service measured 99.00% final test accuracy)" in err
    assert "with the server stopped" in err and "pruned 0.420 ms (0.70x)" in err


def test_the_demo_times_both_models_in_interleaved_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch import nn

    from models.io import export_onnx

    def cnn(width: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)
        )

    wide, narrow = tmp_path / "wide.onnx", tmp_path / "narrow.onnx"
    export_onnx(cnn(16), _demo.SHAPE, wide)
    export_onnx(cnn(4), _demo.SHAPE, narrow)
    timed: list[int] = []
    measure = _demo_latency_meter(timed)
    monkeypatch.setattr("models.cost.measure_onnx_latency", measure)
    monkeypatch.setattr(_demo, "ALONE_REPEATS", 5)
    unpruned, pruned = _demo._latency_alone(wide, narrow)
    sizes = (wide.stat().st_size, narrow.stat().st_size)
    assert timed == [sizes[0], sizes[1]] * _demo.ALONE_ROUNDS  # interleaved, round by round
    assert 0 < unpruned < 1e3 and 0 < pruned < 1e3


def _demo_latency_meter(timed: list[int]) -> Any:
    """Wrap the real ONNX latency meter, recording the size of each model it times."""
    from models.cost import measure_onnx_latency

    def measure(model: bytes, **kwargs: Any) -> Any:
        timed.append(len(model))
        return measure_onnx_latency(model, **kwargs)

    return measure


def test_the_demo_cleans_up_on_ctrl_c_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(client: Any, job_id: str, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    scratch = _fake_demo(monkeypatch, tmp_path, interrupted)
    assert main(["demo", "--out", str(tmp_path / "out")]) == 130
    assert list(scratch.iterdir()) == []
