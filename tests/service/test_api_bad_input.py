"""Every bad input gets a 4xx with a message, and nothing already stored is lost."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models.zoo import build_model
from service.settings import Settings
from tests.service.conftest import job_spec, make_token, submit, torch_state_dict_bytes


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _evil_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"not an image"
        info = tarfile.TarInfo("../../escaped.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _nan_weights() -> bytes:
    model = build_model("tiny_cnn", 10, (3, 16, 16))
    with torch.no_grad():
        model.conv_a.weight[0, 0, 0, 0] = float("nan")
    return torch_state_dict_bytes(model)


def _pickle_payload(tmp: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"stem.0.weight": torch.zeros(1), "x": _Payload(tmp / "pwned")}, buffer)
    return buffer.getvalue()


def _raw(client: TestClient, spec_text: str) -> Any:
    return client.post("/v1/jobs", data={"spec": spec_text}, files={"_": ("", b"")})


CASES: dict[str, tuple[Callable[[TestClient, Path], Any], int, str]] = {
    "malformed JSON spec": (lambda c, t: _raw(c, '{"arch": "tiny_cnn",'), 422, "invalid_json"),
    "unknown arch": (lambda c, t: submit(c, job_spec(arch="resnet20cifar")), 422, "invalid_spec"),
    "weights of another arch": (
        lambda c, t: submit(c, weights=torch_state_dict_bytes(build_model("resnet20_cifar"))),
        422,
        "weights_mismatch",
    ),
    "a pickle with a code payload": (
        lambda c, t: submit(c, weights=_pickle_payload(t)),
        422,
        "unsafe_weights",
    ),
    "a text file as weights": (
        lambda c, t: submit(c, weights=b"hello, these are weights\n"),
        422,
        "invalid_weights",
    ),
    "NaN weights": (lambda c, t: submit(c, weights=_nan_weights()), 422, "invalid_weights"),
    "an npz with object arrays": (
        lambda c, t: submit(c, job_spec(dataset="upload"), dataset=("d.npz", _npz_object())),
        422,
        "invalid_dataset",
    ),
    "an archive with ../ members": (
        lambda c, t: submit(c, job_spec(dataset="upload"), dataset=("d.tar", _evil_tar())),
        422,
        "unsafe_archive",
    ),
    "an oversized upload": (lambda c, t: submit(c, weights=b"\0" * (3 << 20)), 413, "too_large"),
    "a budget no plan can meet": (
        lambda c, t: submit(c, job_spec(budget={"flops": 0.001})),
        422,
        "budget_unreachable",
    ),
    "a negative trial count": (
        lambda c, t: submit(c, job_spec(search={"trials": -2})),
        422,
        "invalid_spec",
    ),
    "a server path as dataset": (
        lambda c, t: submit(c, job_spec(dataset="npz:/etc/passwd")),
        422,
        "invalid_spec",
    ),
    "no spec at all": (
        lambda c, t: c.post("/v1/jobs", files={"weights": ("w", b"x")}),
        422,
        "invalid_request",
    ),
}


def _npz_object() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.array([{"a": 1}, None], dtype=object), y_train=np.array([0, 1]))
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_is_lost(
    case: str, api: TestClient, tmp_path: Path
) -> None:
    kept = submit(api).json()
    send, status, code = CASES[case]
    response = send(api, tmp_path)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert len(body["error"]["message"]) > 10
    assert not (tmp_path / "pwned").exists()
    jobs = api.get("/v1/jobs").json()
    assert [j["id"] for j in jobs["items"]] == [kept["id"]]
    assert api.get(f"/v1/jobs/{kept['id']}").json()["spec"] == kept["spec"]


def test_an_unknown_job_of_another_tenant_is_just_not_found(
    api: TestClient, settings: Settings
) -> None:
    theirs = submit(api).json()["id"]
    other = {"Authorization": f"Bearer {make_token(settings, 'globex')}"}
    missing = api.get("/v1/jobs/00000000000000000000000000000000", headers=other)
    foreign = api.get(f"/v1/jobs/{theirs}", headers=other)
    assert missing.status_code == foreign.status_code == 404
    assert missing.json()["error"]["code"] == foreign.json()["error"]["code"]


def test_a_valid_dataset_upload_is_accepted(api: TestClient) -> None:
    rng = np.random.default_rng(0)
    data = _npz(
        x_train=rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8), y_train=np.arange(40) % 4
    )
    response = submit(api, job_spec(dataset="upload", num_classes=4), dataset=("d.npz", data))
    assert response.status_code == 202, response.text


def test_a_dataset_with_more_classes_than_the_model_is_refused(api: TestClient) -> None:
    data = _npz(x_train=np.zeros((24, 16, 16), dtype=np.uint8), y_train=np.arange(24) % 12)
    response = submit(api, job_spec(dataset="upload", num_classes=10), dataset=("d.npz", data))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "dataset_mismatch"
