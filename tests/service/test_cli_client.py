"""``inferprune submit/status/pareto/download/cancel/jobs`` against an imitated server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.client import Client
from tests.service.conftest import run_cli
from tests.service.test_client import BEST, JOB_ID, PNG, FakeServer, form_parts, job_public


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """A fake server every CLI command connects to; records how it was looked up."""
    fake = FakeServer()

    def from_environment(
        server: str | None = None, token: str | None = None, data_dir: Path | None = None
    ) -> Client:
        fake.lookups.append((server, token, data_dir))
        return fake.client()

    monkeypatch.setattr(Client, "from_environment", staticmethod(from_environment))
    return fake


def test_submit_builds_the_spec_from_flags_and_uploads_files(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, data = tmp_path / "base.safetensors", tmp_path / "mine.npz"
    weights.write_bytes(b"weights")
    data.write_bytes(b"npz")
    status, out, _ = run_cli(
        capsys,
        "submit",
        "--arch",
        "resnet20_cifar",
        "--input-shape",
        "3,32,32",
        "--flops",
        "0.5",
        "--trials",
        "4",
        "--sampler",
        "gp",
        "--epochs-per-trial",
        "0.5",
        "--weights",
        str(weights),
        "--dataset-file",
        str(data),
        "--idempotency-key",
        "k1",
        "--server",
        "http://gpu:8000",
        "--token",
        "abc",
        "--json",
    )
    assert status == 0
    job = json.loads(out)
    assert job["id"] == "a" * 32 and job["status"] == "queued"
    assert server.lookups == [("http://gpu:8000", "abc", None)]
    request = server.requests[-1]
    assert request.headers["idempotency-key"] == "k1"
    parts = form_parts(request)
    assert json.loads(parts["spec"][1]) == {
        "arch": "resnet20_cifar",
        "input_shape": [3, 32, 32],
        "dataset": "upload",
        "budget": {"flops": 0.5},
        "search": {"trials": 4, "sampler": "gp"},
        "finetune": {"epochs_per_trial": 0.5},
    }
    assert parts["weights"] == ("base.safetensors", b"weights")
    assert parts["dataset"] == ("mine.npz", b"npz")


def test_submit_flags_override_the_spec_file(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "job.json"
    spec_file.write_text(
        json.dumps(
            {"arch": "vgg11_cifar", "budget": {"flops": 0.3}, "search": {"trials": 50, "seed": 1}}
        )
    )
    status, out, err = run_cli(capsys, "submit", "--spec", str(spec_file), "--trials", "5")
    assert status == 0 and out == ""
    assert "a" * 32 in err and "status" in err and "--watch" in err
    sent = json.loads(form_parts(server.requests[-1])["spec"][1])
    assert sent == {
        "arch": "vgg11_cifar",
        "budget": {"flops": 0.3},
        "search": {"trials": 5, "seed": 1},
    }


def test_submit_compute_epochs_lets_the_server_decide_the_trials(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = run_cli(
        capsys, "submit", "--arch", "resnet20_cifar", "--flops", "0.25", "--compute-epochs", "20"
    )
    assert status == 0
    sent = json.loads(form_parts(server.requests[-1])["spec"][1])
    assert sent["search"] == {"compute_epochs": 20.0}  # no trials: the fidelity plan decides


def test_submit_without_a_model_is_a_one_line_error(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, "submit", "--flops", "0.5")
    assert status == 1 and out == "" and "--arch" in err
    assert server.requests == []


def test_submit_onnx_uploads_the_model_without_an_arch(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mine.onnx"
    model.write_bytes(b"onnx bytes")
    status, _, _ = run_cli(
        capsys,
        "submit",
        "--onnx",
        str(model),
        "--dataset",
        "digits",
        "--flops",
        "0.5",
        "--compute-epochs",
        "4",
    )
    assert status == 0
    parts = form_parts(server.requests[-1])
    assert parts["model"] == ("mine.onnx", b"onnx bytes")
    sent = json.loads(parts["spec"][1])
    assert "arch" not in sent and sent["dataset"] == "digits"
    # the file is the whole model: an arch or weights beside it is a one-line error
    status, out, err = run_cli(capsys, "submit", "--onnx", str(model), "--arch", "resnet20_cifar")
    assert status == 1 and out == "" and "--onnx is the whole model" in err
    assert len(server.requests) == 1


def test_submit_watch_follows_the_job_to_its_end(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.jobs["a" * 32] = job_public("a" * 32)
    server.script = [
        job_public("a" * 32, status="running", trials_done=2),
        job_public("a" * 32, status="succeeded", trials_done=4, best=BEST),
    ]
    status, out, _ = run_cli(
        capsys, "submit", "--arch", "tiny_cnn", "--watch", "--interval", "0.001", "--json"
    )
    assert status == 0 and json.loads(out)["best"]["trial"] == 2


def test_status_prints_the_job(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.jobs[JOB_ID] = job_public(status="running", trials_done=1)
    status, out, _ = run_cli(capsys, "status", JOB_ID, "--json")
    assert status == 0 and json.loads(out)["progress"]["trials_done"] == 1

    status, out, err = run_cli(capsys, "status", JOB_ID)
    assert status == 0 and out == ""
    assert "running" in err and "1/4" in err and "resnet20_cifar" in err

    waiting = "waiting for device 'pi4': no agent of it is live"
    best = {"trial": 2, "macs": 1000, "val_accuracy": 0.9, "latency_ms": 2.5}
    server.jobs[JOB_ID] = job_public(status="running", trials_done=1, best=best) | {
        "detail": waiting
    }
    server.jobs[JOB_ID]["best"]["latency_device"] = "pi4"
    status, out, err = run_cli(capsys, "status", JOB_ID)
    assert status == 0 and waiting in " ".join(err.split()) and "2.50 ms on pi4" in err


def test_status_watch_exits_0_on_success(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script = [
        job_public(status="running", trials_done=1),
        job_public(status="running", trials_done=3),
        job_public(status="succeeded", trials_done=4, best=BEST),
    ]
    status, _, err = run_cli(capsys, "status", JOB_ID, "--watch", "--interval", "0.001")
    assert status == 0
    # Not a terminal: one line per change, then the final summary with the best model.
    assert "trials 1/4" in err and "trials 3/4" in err
    assert "succeeded" in err and "93.0% val" in err and "trial 2" in err


def test_status_watch_exits_1_and_shows_why_a_job_failed(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = {"code": "no_feasible_trial", "message": "none of the 4 trials met the budget"}
    server.script = [job_public(status="failed", error=reason)]
    status, _, err = run_cli(capsys, "status", JOB_ID, "--watch", "--interval", "0.001")
    assert status == 1
    assert "no_feasible_trial" in err and "met the budget" in err

    server.script = [job_public(status="cancelled")]
    status, out, _ = run_cli(capsys, "status", JOB_ID, "--watch", "--json")
    assert status == 1 and json.loads(out)["status"] == "cancelled"


def test_an_unknown_job_is_a_one_line_error(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, "status", "nope")
    assert status == 1 and out == "" and "no job nope" in err


def test_pareto_lists_the_front_marks_the_choice_and_saves_the_plot(
    server: FakeServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, out, err = run_cli(capsys, "pareto", JOB_ID)
    assert status == 0 and out == ""
    assert "chosen" in err and "93.00%" in err and "20.00M" in err
    assert not list(tmp_path.iterdir())

    png = tmp_path / "front.png"
    status, out, _ = run_cli(capsys, "pareto", JOB_ID, "--png", str(png), "--json")
    assert status == 0 and png.read_bytes() == PNG
    body = json.loads(out)
    assert body["best_trial"] == 2 and body["png"] == str(png)

    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(capsys, "pareto", JOB_ID, "--png")
    assert status == 0 and (tmp_path / f"pareto-{JOB_ID[:8]}.png").read_bytes() == PNG
    assert f"pareto-{JOB_ID[:8]}.png" in err


def test_download_writes_the_model(
    server: FakeServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_file = tmp_path / "pruned.onnx"
    status, out, _ = run_cli(
        capsys,
        "download",
        JOB_ID,
        "--trial",
        "3",
        "--format",
        "onnx",
        "-o",
        str(out_file),
        "--json",
    )
    assert status == 0 and out_file.read_bytes() == server.checkpoint
    assert json.loads(out) == {
        "job": JOB_ID,
        "trial": 3,
        "format": "onnx",
        "path": str(out_file),
        "size_bytes": len(server.checkpoint),
    }
    assert dict(server.requests[-1].url.params) == {"format": "onnx", "trial": "3"}

    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli(capsys, "download", JOB_ID, "--format", "torchscript")
    assert status == 0 and (tmp_path / f"{JOB_ID[:8]}.pt").exists()
    assert f"{JOB_ID[:8]}.pt" in err


def test_cancel_reports_the_request(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "cancel", JOB_ID, "--json")
    assert status == 0 and json.loads(out)["cancel_requested"] is True
    assert server.requests[-1].method == "POST"
    assert server.requests[-1].url.path == f"/v1/jobs/{JOB_ID}/cancel"

    status, _, err = run_cli(capsys, "cancel", JOB_ID)
    assert status == 0 and "cancel requested" in err


def test_jobs_lists_newest_first(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    newer = "b" * 32
    server.jobs[newer] = job_public(newer, status="succeeded", trials_done=4, best=BEST)
    status, out, _ = run_cli(capsys, "jobs", "--limit", "10", "--json")
    assert status == 0
    assert [j["id"] for j in json.loads(out)["items"]] == [newer, JOB_ID]

    status, out, err = run_cli(capsys, "jobs", "--limit", "1")
    assert status == 0 and out == ""
    assert newer in err and JOB_ID not in err and "--offset 1" in err


def test_an_unreachable_server_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run_cli(
        capsys,
        "jobs",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--data-dir",
        str(tmp_path),
    )
    assert status == 1 and out == ""
    assert "cannot reach the inferprune server" in err and "inferprune serve" in err


def test_devices_lists_the_tenants_target_devices(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, "devices")
    assert status == 0 and "no devices yet" in err and "inferprune agent" in err
    server.devices.append(
        {
            "name": "pi4",
            "spec": {"cpu": "Cortex-A72", "cores": 4, "onnxruntime": "1.20.0"},
            "last_seen_at": "2026-12-04T10:00:00",
            "live": True,
            "agents_live": 2,
            "queued": 3,
            "measuring": 1,
            "measured": 40,
        }
    )
    status, out, err = run_cli(capsys, "devices")
    assert status == 0
    row = next(line for line in err.splitlines() if "pi4" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[0] == "pi4" and cells[1] == "2" and cells[-3:] == ["3", "1", "40"]
    assert "Cortex" in err
    status, out, _ = run_cli(capsys, "devices", "--json")
    assert status == 0 and json.loads(out)["items"][0]["name"] == "pi4"
