"""The Python client against an in-process imitation of the REST contract (no network)."""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from service.api.schemas import JobPublic, ParetoPublic
from service.client import Client, ClientError, parse_sse, wait_for_local_server

JOB_ID = "9b1d2c0e4f6a4b8f9d0c1e2f3a4b5c6d"
SPEC = {"arch": "resnet20_cifar", "dataset": "digits", "budget": {"flops": 0.5}}
PNG = b"\x89PNG\r\n\x1a\nfake"


def job_public(
    job_id: str = JOB_ID,
    status: str = "queued",
    *,
    trials_done: int = 0,
    best: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a job as the API shows it, checked against the wire schema."""
    base = f"/v1/jobs/{job_id}"
    data = {
        "id": job_id,
        "status": status,
        "spec": spec or {**SPEC, "objective": "constrained", "search": {"trials": 4}},
        "progress": {
            "trials_done": trials_done,
            "trials_total": 4,
            "fraction": trials_done / 5,
            "eta_s": None if status == "queued" else 12.0 * (4 - trials_done),
        },
        "baseline": {"macs": 41_218_688, "params": 272_474, "val_accuracy": 0.94},
        "best": best,
        "error": error,
        "pretrained": True,
        "created_at": "2026-11-21T12:00:00Z",
        "started_at": None if status == "queued" else "2026-11-21T12:00:02Z",
        "finished_at": "2026-11-21T12:05:00Z" if status == "succeeded" else None,
        "links": {
            "self": base,
            "trials": f"{base}/trials",
            "pareto": f"{base}/pareto",
            "pareto_png": f"{base}/pareto.png",
            "checkpoint": f"{base}/checkpoint",
            "events": f"{base}/events",
        },
    }
    return JobPublic.model_validate(data).model_dump(mode="json")


BEST = {
    "trial": 2,
    "macs": 20_000_000,
    "params": 130_000,
    "val_accuracy": 0.93,
    "test_accuracy": 0.92,
    "latency_ms": 0.41,
    "plan": {"layer1": 8},
}
PARETO = ParetoPublic.model_validate(
    {
        "objectives": ["val_accuracy", "macs"],
        "points": [
            {
                "trial": 2,
                "val_accuracy": 0.93,
                "macs": 20_000_000,
                "params": 130_000,
                "latency_ms": 0.41,
                "plan": {"layer1": 8},
            },
            {
                "trial": 3,
                "val_accuracy": 0.90,
                "macs": 12_000_000,
                "params": 90_000,
                "latency_ms": None,
                "plan": {"layer1": 4},
            },
        ],
        "hypervolume": 0.61,
        "best_trial": 2,
    }
).model_dump(mode="json")


def form_parts(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """Return a multipart request's parts: name → (filename, bytes)."""
    head = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n"
    message = email.message_from_bytes(head + request.read())
    return {
        part.get_param("name", header="content-disposition"): (
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.get_payload()
    }


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class FakeServer:
    """Answers like the REST contract from canned jobs; records every request.

    ``script`` lists the statuses successive ``GET /v1/jobs/{id}`` calls move through.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.lookups: list[tuple[Any, ...]] = []  # Client.from_environment's arguments (CLI)
        self.jobs: dict[str, dict[str, Any]] = {JOB_ID: job_public()}
        self.script: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.checkpoint = b"safetensors bytes" * 1000
        self.events = (
            b": connected\n\n"
            b"event: status\ndata: " + json.dumps(job_public(status="running")).encode() + b"\n\n"
            b'event: trial\ndata: {"number": 0, "state": "complete"}\n\n'
            b"event: done\ndata: " + json.dumps(job_public(status="succeeded")).encode() + b"\n\n"
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def client(self) -> Client:
        return Client("http://inferprune.test", "tok-123", transport=self.transport())

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        method, parts = request.method, request.url.path.strip("/").split("/")
        if parts == ["healthz"]:
            return httpx.Response(200, json={"status": "ok", "version": "0.1.0"})
        if request.headers.get("authorization") != "Bearer tok-123":
            return error(401, "unauthorized", "missing or unknown token")
        if parts == ["v1", "devices"]:
            return httpx.Response(200, json={"items": self.devices})
        if parts == ["v1", "jobs"] and method == "POST":
            spec = json.loads(form_parts(request)["spec"][1])
            job = job_public(job_id="a" * 32, spec=spec)
            self.jobs[job["id"]] = job
            return httpx.Response(202, json=job, headers={"Location": job["links"]["self"]})
        if parts == ["v1", "jobs"]:
            items = list(self.jobs.values())[::-1]
            limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
            page = items[offset : offset + limit]
            return httpx.Response(
                200,
                json={
                    "items": page,
                    "total": len(items),
                    "limit": limit,
                    "offset": offset,
                    "next": None,
                },
            )
        job_id = parts[2]
        if job_id not in self.jobs:
            return error(404, "not_found", f"no job {job_id}")
        rest = parts[3:]
        if not rest:
            if self.script:
                self.jobs[job_id] = self.script.pop(0)
            return httpx.Response(200, json=self.jobs[job_id])
        if rest == ["cancel"] and method == "POST":
            self.jobs[job_id] = {**self.jobs[job_id], "cancel_requested": True}
            return httpx.Response(200, json=self.jobs[job_id])
        if rest == ["trials"]:
            return httpx.Response(200, json={"objectives": ["val_accuracy"], "items": []})
        if rest == ["pareto"]:
            return httpx.Response(200, json=PARETO)
        if rest == ["pareto.png"]:
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        if rest == ["checkpoint"]:
            return httpx.Response(
                200,
                content=iter([self.checkpoint[:5000], self.checkpoint[5000:]]),
                headers={"content-disposition": 'attachment; filename="../trial-2.safetensors"'},
            )
        if rest == ["events"]:
            return httpx.Response(
                200, content=self.events, headers={"content-type": "text/event-stream"}
            )
        return error(404, "not_found", "no such route")


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def test_submit_sends_the_spec_the_files_and_the_idempotency_key(
    server: FakeServer, tmp_path: Path
) -> None:
    weights = tmp_path / "base.safetensors"
    weights.write_bytes(b"\x00\x01weights\xff")
    with server.client() as client:
        job = client.submit(
            SPEC, weights=weights, dataset=b"npz\x00bytes", idempotency_key="retry-1"
        )
    assert job["id"] == "a" * 32 and job["status"] == "queued"
    request = server.requests[-1]
    assert request.method == "POST" and request.url.path == "/v1/jobs"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["idempotency-key"] == "retry-1"
    assert request.headers["content-type"].startswith("multipart/form-data")
    parts = form_parts(request)
    assert parts["spec"][0] is None and json.loads(parts["spec"][1]) == SPEC
    assert parts["weights"] == ("base.safetensors", b"\x00\x01weights\xff")
    assert parts["dataset"] == ("dataset.npz", b"npz\x00bytes")


def test_submit_takes_a_spec_model_and_sends_multipart_without_files(
    server: FakeServer,
) -> None:
    class Spec(BaseModel):  # stands in for search.spec.JobSpec, which imports the zoo
        arch: str
        input_shape: tuple[int, int, int] = (3, 16, 16)

    spec = Spec(arch="tiny_cnn")
    with server.client() as client:
        client.submit(spec, weights=b"w")
        client.submit({"arch": "tiny_cnn", "objective": "pareto"})
    with_weights, bare = (form_parts(r) for r in server.requests[-2:])
    assert json.loads(with_weights["spec"][1]) == spec.model_dump(mode="json")
    assert with_weights["weights"] == ("weights.safetensors", b"w")
    assert set(bare) == {"spec"}
    assert "idempotency-key" not in server.requests[-1].headers
    assert server.requests[-1].headers["content-type"].startswith("multipart/form-data")


def test_a_missing_upload_file_is_reported_before_anything_is_sent(
    server: FakeServer, tmp_path: Path
) -> None:
    with server.client() as client, pytest.raises(ClientError) as caught:
        client.submit(SPEC, weights=tmp_path / "nope.safetensors")
    assert caught.value.code == "unreadable_file" and "nope.safetensors" in str(caught.value)
    assert server.requests == []


def test_reading_endpoints_return_the_json_bodies(server: FakeServer) -> None:
    with server.client() as client:
        assert client.health()["status"] == "ok"
        assert client.job(JOB_ID)["id"] == JOB_ID
        assert client.jobs(limit=5, offset=0)["total"] == 1
        assert client.trials(JOB_ID)["items"] == []
        assert client.pareto(JOB_ID)["best_trial"] == 2
        assert client.pareto_png(JOB_ID) == PNG
        assert client.cancel(JOB_ID)["cancel_requested"] is True
    listing = next(r for r in server.requests if r.url.path == "/v1/jobs")
    assert dict(listing.url.params) == {"limit": "5", "offset": "0"}
    assert server.requests[-1].method == "POST"


def test_api_errors_carry_status_code_and_message(server: FakeServer) -> None:
    with server.client() as client, pytest.raises(ClientError) as caught:
        client.job("missing")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == str(caught.value) == "no job missing"

    bad_token = Client("http://inferprune.test", "wrong", transport=server.transport())
    with bad_token, pytest.raises(ClientError) as caught:
        bad_token.jobs()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_an_error_without_a_json_body_still_says_what_happened() -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><body>Bad Gateway</body></html>")

    with Client("inferprune.test:8000/", "t", transport=httpx.MockTransport(proxy)) as client:
        assert client.server == "http://inferprune.test:8000"
        with pytest.raises(ClientError) as caught:
            client.job(JOB_ID)
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert "502" in caught.value.message and "Bad Gateway" in caught.value.message


def test_a_success_that_is_not_json_is_a_bad_response() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="hello"))
    with Client("http://x", "t", transport=transport) as client, pytest.raises(ClientError) as e:
        client.health()
    assert e.value.code == "bad_response"


def test_an_unreachable_server_is_one_clear_error() -> None:
    with Client("http://127.0.0.1:9", "t", timeout=5) as client:
        with pytest.raises(ClientError) as caught:
            client.health()
    assert caught.value.code == "unreachable" and caught.value.status == 0
    assert "http://127.0.0.1:9" in caught.value.message
    assert "inferprune serve" in caught.value.message


def test_events_are_parsed_from_chunked_server_sent_events(server: FakeServer) -> None:
    body = server.events
    # Arbitrary chunk boundaries, even inside a line, must not matter.
    server.events = b""
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]

    def streaming(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=iter(chunks), headers={"content-type": "text/event-stream"}
        )

    with Client("http://x", "t", transport=httpx.MockTransport(streaming)) as client:
        events = list(client.events(JOB_ID))
    assert [name for name, _ in events] == ["status", "trial", "done"]
    assert events[0][1]["status"] == "running" and events[-1][1]["status"] == "succeeded"
    assert events[1][1] == {"number": 0, "state": "complete"}


def test_sse_framing_comments_multiline_data_and_crlf() -> None:
    lines = [
        ": keep-alive",
        "",
        "retry: 3000",
        "id: 7",
        "event: trial",
        'data: {"number": 1,',
        'data:  "state": "pruned"}',
        "",
        "",
        "event: status",
        "",  # an event without data is dropped
        "data: not json\r",
        "\r",
        "event: done",
        'data: {"status": "succeeded"}',  # the stream ends without a blank
    ]
    assert list(parse_sse(iter(lines))) == [
        ("trial", {"number": 1, "state": "pruned"}),
        ("message", {"data": "not json"}),
        ("done", {"status": "succeeded"}),
    ]


def test_events_of_an_unknown_job_raise(server: FakeServer) -> None:
    with server.client() as client, pytest.raises(ClientError) as caught:
        next(client.events("missing"))
    assert caught.value.code == "not_found"


def test_wait_polls_until_the_job_finishes(server: FakeServer) -> None:
    server.script = [
        job_public(status="queued"),
        job_public(status="running", trials_done=2),
        job_public(status="succeeded", trials_done=4, best=BEST),
    ]
    seen: list[str] = []
    with server.client() as client:
        job = client.wait(JOB_ID, poll_s=0.001, on_update=lambda j: seen.append(j["status"]))
    assert job["status"] == "succeeded" and job["best"]["trial"] == 2
    assert seen == ["queued", "running", "succeeded"]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_wait_returns_on_every_finished_status(server: FakeServer, status: str) -> None:
    server.script = [job_public(status=status)]
    with server.client() as client:
        assert client.wait(JOB_ID, poll_s=0.001)["status"] == status


def test_wait_gives_up_after_its_timeout(server: FakeServer) -> None:
    server.jobs[JOB_ID] = job_public(status="running")
    with server.client() as client, pytest.raises(ClientError) as caught:
        client.wait(JOB_ID, poll_s=0.01, timeout_s=0.05)
    assert caught.value.code == "timeout" and "still running" in caught.value.message


def test_download_writes_the_whole_file_atomically(server: FakeServer, tmp_path: Path) -> None:
    target = tmp_path / "models" / "pruned.onnx"
    with server.client() as client:
        written = client.download(JOB_ID, target, trial=3, format="onnx")
        into_folder = client.download(JOB_ID, tmp_path)
    assert written == target and target.read_bytes() == server.checkpoint
    request = server.requests[-2]
    assert request.url.path == f"/v1/jobs/{JOB_ID}/checkpoint"
    assert dict(request.url.params) == {"format": "onnx", "trial": "3"}
    assert "trial" not in server.requests[-1].url.params
    # The server's file name is used without its path part.
    assert into_folder == tmp_path / "trial-2.safetensors"
    assert not [p for p in tmp_path.rglob("*.part")]


def test_an_interrupted_download_leaves_the_old_file_alone(tmp_path: Path) -> None:
    def broken_body() -> Iterator[bytes]:
        yield b"first half"
        raise httpx.ReadError("connection reset by peer")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken_body())

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous model")
    with Client("http://x", "t", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(ClientError) as caught:
            client.download(JOB_ID, target)
    assert caught.value.code == "connection_lost"
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_checkpoint_that_is_not_ready_is_a_409(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return error(409, "not_ready", "the job has not finished")

    with Client("http://x", "t", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(ClientError) as caught:
            client.download(JOB_ID, tmp_path / "m.safetensors")
    assert (caught.value.status, caught.value.code) == (409, "not_ready")
    assert list(tmp_path.iterdir()) == []


def _sent_by(client: Client, server: FakeServer) -> tuple[str, str]:
    with client:
        client.health()
    request = server.requests[-1]
    return f"{request.url.scheme}://{request.url.netloc.decode()}", request.headers["authorization"]


def test_from_environment_prefers_arguments_then_environment_then_the_saved_file(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "client.json").write_text(
        json.dumps({"server": "http://saved:8000", "token": "saved-token"})
    )
    monkeypatch.delenv("INFERPRUNE_SERVER", raising=False)
    monkeypatch.delenv("INFERPRUNE_TOKEN", raising=False)
    monkeypatch.setenv("INFERPRUNE_DATA_DIR", str(tmp_path))
    t = server.transport()
    assert _sent_by(Client.from_environment(transport=t), server) == (
        "http://saved:8000",
        "Bearer saved-token",
    )

    monkeypatch.setenv("INFERPRUNE_SERVER", "http://env:1")
    monkeypatch.setenv("INFERPRUNE_TOKEN", "env-token")
    assert _sent_by(Client.from_environment(transport=t), server) == (
        "http://env:1",
        "Bearer env-token",
    )

    explicit = Client.from_environment("http://arg:2", "arg-token", transport=t)
    assert _sent_by(explicit, server) == ("http://arg:2", "Bearer arg-token")

    monkeypatch.delenv("INFERPRUNE_TOKEN")  # mixing: server from env, token from the file
    assert _sent_by(Client.from_environment(transport=t), server) == (
        "http://env:1",
        "Bearer saved-token",
    )


def test_from_environment_without_credentials_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFERPRUNE_SERVER", raising=False)
    monkeypatch.delenv("INFERPRUNE_TOKEN", raising=False)
    with pytest.raises(ClientError) as caught:
        Client.from_environment(data_dir=tmp_path)
    assert caught.value.code == "no_credentials"
    assert "inferprune serve" in caught.value.message and "--token" in caught.value.message

    (tmp_path / "client.json").write_text("{not json")
    with pytest.raises(ClientError) as caught:
        Client.from_environment(data_dir=tmp_path)
    assert caught.value.code == "no_credentials" and "client.json" in caught.value.message


def test_waiting_for_a_server_that_never_wrote_its_address_times_out(tmp_path: Path) -> None:
    with pytest.raises(ClientError) as caught:
        wait_for_local_server(tmp_path, timeout=0.3, interval=0.05)
    assert caught.value.code == "timeout"


def test_waiting_for_a_server_that_exited_says_so_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(ClientError) as caught:
        wait_for_local_server(tmp_path, process, timeout=60)
    assert caught.value.code == "server_exited"
    assert "code 3" in caught.value.message
