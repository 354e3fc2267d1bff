"""Uploads are refused when unsafe or wrong, with a code a client can act on."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save as save_safetensors
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models.io import CheckpointInfo, checkpoint_bytes
from models.prune import Plan
from models.zoo import build_model
from search.spec import JobSpec
from service.errors import ServiceError
from service.uploads import (
    BodySizeLimit,
    RequestTooLarge,
    UploadError,
    extract_archive,
    validate_budget,
    validate_dataset,
    validate_spec_json,
    validate_weights,
)

SMALL = {"max_members": 10, "max_total_bytes": 256 << 10, "max_member_bytes": 128 << 10}


def tiny_spec(**changes: Any) -> JobSpec:
    data: dict[str, Any] = {
        "arch": "tiny_cnn",
        "num_classes": 10,
        "input_shape": [3, 16, 16],
        "budget": {"flops": 0.5},
    }
    data.update(changes)
    return JobSpec.model_validate(data)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- archive builders ---------------------------------------------------------------------
def make_zip(
    path: Path, entries: list[tuple[str, bytes]], *, modes: dict[str, int] | None = None
) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # duplicate names are one of the cases
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return path


def make_tar(
    path: Path,
    members: list[tarfile.TarInfo | tuple[str, bytes]],
    mode: Literal["w", "w:gz", "w:bz2", "w:xz"] = "w",
) -> Path:
    with tarfile.open(path, mode) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_understating_size(path: Path) -> Path:
    """A zip whose central directory claims 1 KiB for a member that inflates to 1 MiB."""
    make_zip(path, [("data/big.bin", b"\0" * (1 << 20))])
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (1024).to_bytes(4, "little")  # uncompressed size
    local = raw.find(b"PK\x03\x04")
    raw[local + 22 : local + 26] = (1024).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return path


def pax_header_bomb(path: Path) -> Path:
    """A tar.gz whose pax header claims 64 MiB: tarfile would read it all into memory."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 64 << 20
    return _gzip(path, info.tobuf(format=tarfile.USTAR_FORMAT) + b"\0" * 1024)


def _gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_ARCHIVES: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "zip dot-dot": (
        "unsafe_archive",
        lambda d: make_zip(d / "a.zip", [("data/../../evil.txt", b"x")]),
    ),
    "zip absolute": ("unsafe_archive", lambda d: make_zip(d / "a.zip", [("/tmp/evil.txt", b"x")])),
    "zip backslash dot-dot": (
        "unsafe_archive",
        lambda d: make_zip(d / "a.zip", [("data\\..\\..\\evil.txt", b"x")]),
    ),
    "zip symlink": (
        "unsafe_archive",
        lambda d: make_zip(
            d / "a.zip",
            [("data/a.png", b"x"), ("data/link", b"../../outside")],
            modes={"data/link": stat.S_IFLNK | 0o777},
        ),
    ),
    "zip fifo": (
        "unsafe_archive",
        lambda d: make_zip(d / "a.zip", [("data/p", b"")], modes={"data/p": stat.S_IFIFO | 0o644}),
    ),
    "zip bomb": (
        "archive_too_large",
        lambda d: make_zip(d / "a.zip", [("data/z.bin", b"\0" * (4 << 20))]),
    ),
    "zip total over limit": (
        "archive_too_large",
        lambda d: make_zip(d / "a.zip", [(f"data/{i}.bin", b"\0" * (100 << 10)) for i in range(3)]),
    ),
    "zip header understates size": (
        "invalid_archive",
        lambda d: zip_understating_size(d / "a.zip"),
    ),
    "zip too many members": (
        "archive_too_large",
        lambda d: make_zip(d / "a.zip", [(f"data/{i}.txt", b"x") for i in range(11)]),
    ),
    "zip duplicate member": (
        "invalid_archive",
        lambda d: make_zip(d / "a.zip", [("data/a.png", b"x"), ("data/a.png", b"y")]),
    ),
    "tar dot-dot": ("unsafe_archive", lambda d: make_tar(d / "a.tar", [("../evil.txt", b"x")])),
    "tar absolute": ("unsafe_archive", lambda d: make_tar(d / "a.tar", [("/tmp/evil.txt", b"x")])),
    "tar symlink outside": (
        "unsafe_archive",
        lambda d: make_tar(
            d / "a.tar.gz",
            [("data/a.png", b"x"), tar_special("data/evil", tarfile.SYMTYPE, "../../outside")],
            "w:gz",
        ),
    ),
    "tar hardlink": (
        "unsafe_archive",
        lambda d: make_tar(
            d / "a.tar",
            [("data/a.png", b"x"), tar_special("data/b.png", tarfile.LNKTYPE, "data/a.png")],
        ),
    ),
    "tar device": (
        "unsafe_archive",
        lambda d: make_tar(
            d / "a.tar", [("data/a.png", b"x"), tar_special("data/null", tarfile.CHRTYPE)]
        ),
    ),
    "tar fifo": (
        "unsafe_archive",
        lambda d: make_tar(d / "a.tar", [tar_special("data/p", tarfile.FIFOTYPE)]),
    ),
    "tar.xz bomb": (
        "archive_too_large",
        lambda d: make_tar(d / "a.tar.xz", [("data/z.bin", b"\0" * (4 << 20))], "w:xz"),
    ),
    "tar.bz2 too many members": (
        "archive_too_large",
        lambda d: make_tar(d / "a.tbz", [(f"data/{i}.txt", b"x") for i in range(11)], "w:bz2"),
    ),
    "tar.gz pax header bomb": ("archive_too_large", lambda d: pax_header_bomb(d / "a.tgz")),
    "gzip without tar": ("invalid_archive", lambda d: _gzip(d / "a.tar.gz", b"not a tar" * 100)),
    "not an archive": ("invalid_archive", lambda d: _write(d / "a.zip", b"hello, world\n")),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_unsafe_or_oversized_archives_are_refused_and_leave_nothing(
    tmp_path: Path, case: str
) -> None:
    code, build = BAD_ARCHIVES[case]
    (tmp_path / "in").mkdir()
    archive = build(tmp_path / "in")
    dest = tmp_path / "out" / "dest"
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("already here")
    before = tree(tmp_path)

    with pytest.raises(UploadError) as refused:
        extract_archive(archive, dest, **SMALL)

    assert refused.value.code == code, refused.value.message
    assert refused.value.status == 422
    assert tree(tmp_path) == before, "nothing may be written anywhere, in dest or outside it"
    assert not (tmp_path / "outside").exists() and not Path("/tmp/evil.txt").exists()


def test_refused_archive_removes_a_destination_it_created(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", [("ok.txt", b"x"), ("../evil.txt", b"x")])
    with pytest.raises(UploadError, match="'..'"):
        extract_archive(archive, tmp_path / "new" / "dest")
    assert not (tmp_path / "new" / "dest").exists()
    assert not (tmp_path / "new" / "evil.txt").exists()


def test_image_folder_zip_extracts_to_its_single_top_folder(tmp_path: Path) -> None:
    entries = [(f"digits/{c}/{i}.png", png_bytes(40 * c + i)) for c in range(3) for i in range(2)]
    entries += [("__MACOSX/digits/._0.png", b"\0junk"), ("digits/.DS_Store", b"\0")]
    archive = make_zip(tmp_path / "upload.bin", entries)  # the name says nothing

    root = extract_archive(archive, tmp_path / "work")

    assert root == tmp_path / "work" / "digits"
    assert sorted(p.name for p in root.iterdir()) == ["0", "1", "2"]
    assert sorted(os.listdir(tmp_path / "work")) == ["digits"], "no staging folder is left"


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_formats_are_detected_by_content(
    tmp_path: Path, mode: Literal["w", "w:gz", "w:bz2", "w:xz"]
) -> None:
    archive = make_tar(tmp_path / "upload.zip", [("a/x.txt", b"1"), ("b/y.txt", b"2")], mode)
    root = extract_archive(archive, tmp_path / "work")
    # two top-level folders: they are kept together in a folder named after the upload
    assert root == tmp_path / "work" / "upload"
    assert (root / "a" / "x.txt").read_bytes() == b"1" and (
        root / "b" / "y.txt"
    ).read_bytes() == b"2"


# -- spec ---------------------------------------------------------------------------------
def test_spec_that_is_not_json_says_where() -> None:
    with pytest.raises(UploadError) as refused:
        validate_spec_json('{"arch": "tiny_cnn",\n "budget": }')
    assert refused.value.code == "invalid_json"
    assert "line 2, column 12" in refused.value.message


def test_spec_problems_are_listed_one_per_line() -> None:
    text = json.dumps(
        {"arch": "tiny_cnn", "budget": {"flops": 2}, "search": {"trials": 0}, "colour": "red"}
    ).encode()
    with pytest.raises(UploadError) as refused:
        validate_spec_json(text)
    assert refused.value.code == "invalid_spec" and refused.value.status == 422
    lines = refused.value.message.splitlines()
    assert "budget.flops: Input should be less than or equal to 1" in lines
    assert any(line.startswith("search.trials: ") for line in lines)
    assert any(line.startswith("colour: ") for line in lines)


def test_spec_value_errors_read_as_plain_sentences() -> None:
    with pytest.raises(UploadError) as unknown:
        validate_spec_json('{"arch": "resnet21_cifar", "budget": {"flops": 0.5}}')
    assert unknown.value.message.startswith("arch: unknown architecture 'resnet21_cifar'")
    assert "Value error" not in unknown.value.message
    with pytest.raises(UploadError) as no_budget:
        validate_spec_json('{"arch": "tiny_cnn"}')
    assert no_budget.value.message.startswith("spec: a constrained job needs a budget")


def test_valid_spec_and_non_object_spec() -> None:
    spec = validate_spec_json(
        b'{"arch": "tiny_cnn", "input_shape": [3, 16, 16], "budget": {"flops": 0.5}}'
    )
    assert spec.arch == "tiny_cnn" and spec.input_shape == (3, 16, 16)
    with pytest.raises(UploadError, match="JSON object") as refused:
        validate_spec_json("[1, 2]")
    assert refused.value.code == "invalid_spec"


# -- weights ------------------------------------------------------------------------------
def tiny_state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    return build_model("tiny_cnn", num_classes, (3, 16, 16)).state_dict()


def test_safetensors_weights_of_the_spec_architecture_pass() -> None:
    check = validate_weights(tiny_spec(), save_safetensors(tiny_state()))
    assert check.format == "safetensors" and check.arch == "tiny_cnn"
    assert check.num_classes == 10 and check.input_shape == (3, 16, 16)
    assert check.num_tensors == len(tiny_state()) and not check.from_checkpoint


def test_torch_save_weights_pass_and_give_their_class_count() -> None:
    buffer = io.BytesIO()
    torch.save(tiny_state(num_classes=7), buffer)
    check = validate_weights(tiny_spec(num_classes=None), buffer.getvalue())
    assert check.format == "torch-zip" and check.num_classes == 7


def test_weights_of_another_architecture_are_a_mismatch() -> None:
    resnet = build_model("resnet20_cifar", 10, (3, 32, 32)).state_dict()
    with pytest.raises(UploadError) as refused:
        validate_weights(tiny_spec(), save_safetensors(resnet))
    assert refused.value.code == "weights_mismatch"
    assert "missing keys (stem.0.weight" in refused.value.message


class _Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_pickle_with_a_code_payload_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(1), "boom": _Payload(f"touch {marker}")}, buffer)
    assert b"system" in buffer.getvalue()  # the payload really is in the file

    with pytest.raises(UploadError) as refused:
        validate_weights(tiny_spec(), buffer.getvalue())

    assert refused.value.code == "unsafe_weights"
    assert not marker.exists()


def test_text_and_nan_weights_are_invalid() -> None:
    with pytest.raises(UploadError) as text:
        validate_weights(tiny_spec(), b"conv1.weight = [0.1, 0.2]\n")
    assert text.value.code == "invalid_weights"
    state = tiny_state()
    state["fc.weight"][0, 0] = float("nan")
    with pytest.raises(UploadError) as nan:
        validate_weights(tiny_spec(), save_safetensors(state))
    assert nan.value.code == "invalid_weights" and "fc.weight" in nan.value.message


def test_pruned_checkpoints_are_refused_and_checkpoints_must_match_the_spec() -> None:
    model = build_model("tiny_cnn", 10, (3, 16, 16))
    pruned = CheckpointInfo("tiny_cnn", 10, (3, 16, 16), Plan({"stem.0": 8}))
    with pytest.raises(UploadError) as refused:
        validate_weights(tiny_spec(), checkpoint_bytes(model, pruned))
    assert refused.value.code == "already_pruned"

    trained = checkpoint_bytes(model, CheckpointInfo("tiny_cnn", 10, (3, 16, 16), Plan()))
    assert validate_weights(tiny_spec(num_classes=None), trained).from_checkpoint
    with pytest.raises(UploadError) as mismatch:
        validate_weights(tiny_spec(num_classes=12), trained)
    assert (
        mismatch.value.code == "weights_mismatch"
        and "num_classes 10, not 12" in mismatch.value.message
    )


# -- data sets ----------------------------------------------------------------------------
def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return path


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_npz_with_object_arrays_is_refused(tmp_path: Path) -> None:
    labels = np.empty(4, dtype=object)
    labels[:] = [0, 1, 0, 1]
    path = save_npz(tmp_path / "d.npz", x_train=images(4), y_train=labels)
    with pytest.raises(UploadError) as refused:
        validate_dataset(tiny_spec(), path, "d.npz", tmp_path / "work")
    assert refused.value.code == "invalid_dataset" and "object" in refused.value.message
    assert str(tmp_path) not in refused.value.message, (
        "server paths are not the uploader's business"
    )


def test_npz_with_more_classes_than_outputs_is_a_mismatch(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", x_train=images(24), y_train=np.arange(24) % 12)
    with pytest.raises(UploadError) as refused:
        validate_dataset(tiny_spec(num_classes=10), path, "d.npz", tmp_path / "work")
    assert refused.value.code == "dataset_mismatch"
    assert "12 classes" in refused.value.message and "10" in refused.value.message


def test_valid_npz_is_accepted_even_without_its_suffix(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "upload.bin", x_train=images(20), y_train=np.arange(20) % 10)
    check = validate_dataset(tiny_spec(), path, "blob", tmp_path / "work")
    assert check.kind == "npz" and check.num_classes == 10 and check.num_samples == 20
    assert check.name == f"npz:{path.resolve()}"


def test_image_folder_archive_is_extracted_and_counted(tmp_path: Path) -> None:
    entries = [
        (f"pets/{c}/{i}.png", png_bytes(k * 50 + i))
        for k, c in enumerate(("cat", "dog", "eel"))
        for i in range(3)
    ]
    archive = make_zip(tmp_path / "pets.zip", entries)
    check = validate_dataset(tiny_spec(), archive, "pets.zip", tmp_path / "work")
    assert check.kind == "imagefolder" and check.num_classes == 3 and check.num_samples == 9
    assert check.name == f"imagefolder:{(tmp_path / 'work' / 'pets').resolve()}"
    with pytest.raises(UploadError) as refused:
        validate_dataset(tiny_spec(num_classes=2), archive, "pets.zip", tmp_path / "work2")
    assert refused.value.code == "dataset_mismatch" and "3 classes" in refused.value.message
    assert not any((tmp_path / "work2").iterdir()), "a refused data set is removed again"


def test_archive_of_non_images_and_other_files_are_invalid(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "d.zip", [("d/a/1.png", b"not a png"), ("d/b/1.png", png_bytes(1))]
    )
    with pytest.raises(UploadError) as fake:
        validate_dataset(tiny_spec(), archive, "d.zip", tmp_path / "work")
    assert fake.value.code == "invalid_dataset" and "a/1.png" in fake.value.message
    other = _write(tmp_path / "d.csv", b"x,y\n1,2\n")
    with pytest.raises(UploadError) as csv:
        validate_dataset(tiny_spec(), other, "d.csv", tmp_path / "work")
    assert csv.value.code == "invalid_dataset" and ".npz" in csv.value.message


# -- budget -------------------------------------------------------------------------------
def test_reachable_budget_reports_the_cost_range() -> None:
    check = validate_budget(tiny_spec(budget={"flops": 0.5}), save_safetensors(tiny_state()))
    assert check.baseline_macs > 0 and check.baseline_params > 0
    assert 0 < check.smallest_fraction < 0.5
    assert check.max_macs == int(0.5 * check.baseline_macs)


def test_unreachable_budget_says_the_smallest_reachable_fraction() -> None:
    floor = validate_budget(tiny_spec(budget={"flops": 0.5}), None).smallest_fraction
    with pytest.raises(UploadError) as refused:
        validate_budget(tiny_spec(budget={"flops": 0.001}), None)
    assert refused.value.code == "budget_unreachable"
    assert f"set budget.flops to at least {floor:.3f}" in refused.value.message
    assert "MACs" in refused.value.message


# -- body size ----------------------------------------------------------------------------
LIMIT = 1024


def starlette_app(calls: list[int]) -> BodySizeLimit:
    async def create(request: Request) -> JSONResponse:
        calls.append(0)
        async for chunk in request.stream():
            calls[-1] += len(chunk)
        return JSONResponse({"size": calls[-1]})

    app = Starlette(
        routes=[
            Route("/v1/jobs", create, methods=["POST"]),
            Route("/v1/other", create, methods=["POST"]),
        ]
    )
    return BodySizeLimit(app, max_bytes=LIMIT)


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert "MiB" in error["message"] and "INFERPRUNE_MAX_UPLOAD_BYTES" in error["message"]


def test_declared_length_over_the_limit_is_refused_before_the_endpoint() -> None:
    calls: list[int] = []
    client = TestClient(starlette_app(calls))
    assert client.post("/v1/jobs", content=b"x" * LIMIT).json() == {"size": LIMIT}
    calls.clear()
    assert_too_large(client.post("/v1/jobs", content=b"x" * (LIMIT + 1)))
    assert calls == []
    assert client.post("/v1/other", content=b"x" * (4 * LIMIT)).status_code == 200


def test_chunked_body_over_the_limit_is_cut_off() -> None:
    calls: list[int] = []
    client = TestClient(starlette_app(calls))

    def body() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * 500

    response = client.post("/v1/jobs", content=body())
    assert_too_large(response)
    assert calls and calls[0] <= LIMIT, "the endpoint never sees the body past the limit"


def test_fastapi_form_upload_over_the_limit_never_reaches_the_endpoint() -> None:
    calls: list[str] = []
    api = FastAPI()

    @api.post("/v1/jobs")
    async def create(weights: UploadFile = File(...)) -> dict[str, int]:  # noqa: B008
        calls.append("called")
        return {"size": len(await weights.read())}

    client = TestClient(BodySizeLimit(api, max_bytes=LIMIT))
    boundary = "xyz"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="weights"; filename="w.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + b"w" * (3 * LIMIT)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_too_large(client.post("/v1/jobs", content=iter([form]), headers=headers))
    assert calls == []
    small = client.post("/v1/jobs", files={"weights": ("w.bin", b"w" * 100)})
    assert small.json() == {"size": 100}


def test_limit_counts_every_chunk_as_it_streams() -> None:
    seen: list[bytes] = []
    sent: list[MutableMapping[str, Any]] = []
    chunks = [{"type": "http.request", "body": b"x" * 400, "more_body": True} for _ in range(5)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"stored"})

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": []}
    asyncio.run(BodySizeLimit(app, max_bytes=1000)(scope, receive, send))

    assert sum(map(len, seen)) == 800, "the app got the chunks under the limit, no more"
    assert sent[0]["status"] == 413 and b"too_large" in sent[1]["body"]
    assert all(b"stored" not in m.get("body", b"") for m in sent)


@pytest.mark.parametrize("length", ["declared", "chunked"])
def test_request_too_large_is_a_service_error(api: TestClient, settings: Any, length: str) -> None:
    """A job over the server's upload limit gets the API's 413 error and stores nothing,
    whether its size is declared up front or only found out while it streams in."""
    from sqlalchemy import func, select

    from service.store import Blob, Job, make_engine, make_session_factory

    assert issubclass(RequestTooLarge, UploadError) and issubclass(RequestTooLarge, ServiceError)
    boundary = "xyz"
    spec = json.dumps({"arch": "tiny_cnn", "input_shape": [3, 16, 16], "dataset": "synthetic"})
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{spec}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="weights"; '
        'filename="w.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    weights = b"\0" * (settings.max_upload_bytes + 1)  # one byte over the limit
    body = head.encode() + weights + f"\r\n--{boundary}--\r\n".encode()
    files_before = sorted(p for p in settings.data_dir.rglob("*") if p.is_file())

    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    response = api.post(
        "/v1/jobs",
        # bytes carry a Content-Length; an iterator is sent chunked, its size unknown
        content=body if length == "declared" else iter(chunks),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert_too_large(response)
    message = response.json()["error"]["message"]
    assert response.json() == {"error": {"code": "too_large", "message": message}}
    assert "2 MiB" in message  # the limit of these settings
    assert api.get("/v1/jobs").json()["total"] == 0
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Blob)) == 0
    engine.dispose()
    assert sorted(p for p in settings.data_dir.rglob("*") if p.is_file()) == files_before
