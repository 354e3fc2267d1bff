"""``/v1/jobs``: submit, list, read and cancel jobs."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from search.fidelity import planned_trials
from search.spec import JobSpec
from service.api.deps import SessionDep, StateDep, TenantDep
from service.api.schemas import ErrorBody, JobList, JobPublic
from service.api.state import AppState
from service.api.views import job_public
from service.errors import ServiceError
from service.store import (
    NewJob,
    count_active_jobs,
    create_job,
    device_registered,
    find_by_idempotency_key,
    get_job,
    list_jobs,
    request_cancel,
)
from service.uploads import (
    ReceivedFile,
    Submission,
    SubmissionLimits,
    echo,
    parse_spec_json,
    receive_file,
    validate_submission,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"])

_JOB_ID = {"job_id": "$response.body#/id"}
JOB_LINKS = {
    name: {"operationId": operation, "parameters": _JOB_ID, "description": text}
    for name, operation, text in (
        ("GetJob", "read_job", "Poll the job."),
        ("CancelJob", "cancel_job", "Cancel the job."),
        ("GetTrials", "list_trials", "The job's trials."),
        ("GetPareto", "get_pareto", "The job's Pareto front."),
        ("GetParetoPlot", "get_pareto_png", "The front as a PNG."),
        ("GetCheckpoint", "get_checkpoint", "Download the chosen model."),
        ("GetEvents", "stream_events", "Progress as server-sent events."),
    )
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown token."},
    404: {"model": ErrorBody, "description": "No such job for this tenant."},
}

# Validating uploads builds models: at most two at a time, off the event loop.
_VALIDATION_SLOTS = anyio.CapacityLimiter(2)

SPEC_HELP = (
    "The job spec as JSON text, e.g. "
    '`{"arch": "resnet20_cifar", "dataset": "digits", "budget": {"flops": 0.5}, '
    '"search": {"trials": 20}}`. See the JobSpec schema for every field. Use '
    '`"dataset": "upload"` with a `dataset` file. At most 64 KiB, nested at most 16 deep; '
    "`contentSchema` gives every field with its limits."
)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a pydantic JSON schema with its ``$defs`` references written out in place,
    so that it reads the same wherever it is embedded (here: inside the form's schema)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **resolve(extra)}
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


SPEC_SCHEMA = _inlined(JobSpec.model_json_schema())
"""The spec form field's content: the JobSpec JSON schema, every limit included."""


def _request_hash(spec: Any, *files: ReceivedFile | None) -> str:
    """Return what identifies a request for Idempotency-Key replays: the parsed spec and
    the SHA-256 of each file (computed while it was received)."""
    digest = hashlib.sha256(json.dumps({"spec": spec}, sort_keys=True).encode())
    for part in files:
        digest.update(b"|" + (part.sha256.encode() if part is not None and part.size else b"-"))
    return digest.hexdigest()


def _limits(state: AppState) -> SubmissionLimits:
    settings = state.settings
    return SubmissionLimits(
        max_trials=settings.max_trials_per_job,
        max_model_bytes=settings.max_model_bytes,
        max_dataset_bytes=settings.max_dataset_bytes,
        data_root=settings.data_root,
        check_public_datasets=settings.check_public_datasets,
    )


def _validate(
    state: AppState,
    spec_text: str,
    weights: ReceivedFile | None,
    dataset: ReceivedFile | None,
    model: ReceivedFile | None,
) -> Submission:
    """Check everything about a submission under this server's limits (blocks: torch)."""
    return validate_submission(spec_text, weights, dataset, _limits(state), model=model)


async def _receive(state: AppState, upload: UploadFile | None) -> ReceivedFile | None:
    """Stream an uploaded file to disk under the data folder (off the event loop)."""
    if upload is None:
        return None
    folder = state.settings.data_dir / "incoming"
    try:
        return await run_in_threadpool(receive_file, upload.file, folder, upload.filename)
    except OSError as exc:  # a full or read-only disk: the server's problem, said so
        raise ServiceError(
            f"the server cannot store the upload now ({exc.strerror or exc}); try again later",
            code="storage_error",
            status=507,
        ) from exc


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobPublic,
    summary="Submit a pruning job",
    operation_id="submit_job",
    responses={
        **_ERRORS,
        202: {
            "model": JobPublic,
            "description": "Accepted: the job is queued.",
            "links": JOB_LINKS,
        },
        200: {
            "model": JobPublic,
            "description": "Replay of an earlier request with the "
            "same Idempotency-Key and body: the job it created.",
        },
        413: {"model": ErrorBody, "description": "The request is larger than the limit."},
        422: {
            "model": ErrorBody,
            "description": "Invalid spec, weights, dataset or budget, or a model or data "
            "set over this server's limits.",
        },
        429: {"model": ErrorBody, "description": "Too many active jobs for this tenant."},
    },
)
async def submit_job(
    request: Request,
    response: Response,
    state: StateDep,
    tenant: TenantDep,
    spec: Annotated[
        str,
        Form(
            description=SPEC_HELP,
            json_schema_extra={
                "contentMediaType": "application/json",
                "contentSchema": SPEC_SCHEMA,
            },
        ),
    ],
    weights: Annotated[
        UploadFile | None,
        File(
            description="Trained weights: safetensors (preferred) or a torch state_dict. "
            "Never unpickled beyond tensors. Omit to start from random weights."
        ),
    ] = None,
    dataset: Annotated[
        UploadFile | None,
        File(
            description='A data set for `"dataset": "upload"`: .npz (x_train, y_train, optional '
            "val/test; finite values; arrays at most INFERPRUNE_MAX_DATASET_BYTES unpacked, "
            "1 GiB by default) or a .zip/.tar of class folders of images."
        ),
    ] = None,
    model: Annotated[
        UploadFile | None,
        File(
            description="An ONNX model (graph and weights in one file) to prune instead of a "
            "zoo `arch` (leave `arch` out; `weights` do not apply). It is rebuilt as a torch "
            "module from a fixed table of CNN operators, never run as code; an operator "
            "outside the table is refused by name, and the rebuilt model must match "
            "onnxruntime's outputs. The delivered `model.onnx` is the pruned model."
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retry-safe submission: the same key and body return the same job.",
        ),
    ] = None,
) -> JobPublic:
    """Validate everything (spec, architecture, weights against it, data set and its
    classes, budget reachability), store the uploads and queue the job. Workers pick it
    up; poll `Location` or stream `/events`."""
    # the spec's size, depth and JSON first: nothing below may parse an unbounded spec
    raw_spec = await run_in_threadpool(parse_spec_json, spec)
    received: list[ReceivedFile] = []
    try:
        weights_file = await _receive(state, weights)
        dataset_file = await _receive(state, dataset)
        model_file = await _receive(state, model)
        received = [f for f in (weights_file, dataset_file, model_file) if f is not None]
        request_hash = _request_hash(raw_spec, weights_file, dataset_file, model_file)
        if idempotency_key:
            existing = await run_in_threadpool(
                _replay, state, tenant, idempotency_key, request_hash
            )
            if existing is not None:
                response.status_code = 200
                response.headers["Location"] = existing.links.self
                return existing
        active = await run_in_threadpool(_count_active, state, tenant)
        if active >= state.settings.max_active_jobs_per_tenant:
            raise ServiceError(
                f"{active} jobs are already queued or running for this tenant "
                f"(limit {state.settings.max_active_jobs_per_tenant}); wait for one "
                "to finish or cancel one",
                code="too_many_jobs",
                status=429,
            )
        accepted = await anyio.to_thread.run_sync(
            _validate,
            state,
            spec,
            weights_file,
            dataset_file,
            model_file,
            limiter=_VALIDATION_SLOTS,
        )
        await run_in_threadpool(_check_target, state, tenant, accepted.spec)
        job = await run_in_threadpool(
            _store,
            state,
            tenant,
            accepted,
            model_file or weights_file,  # an ONNX model is stored as the job's weights
            dataset_file,
            idempotency_key,
            request_hash,
        )
    finally:
        if received:
            await run_in_threadpool(_discard, received)
    response.headers["Location"] = job.links.self
    return job


def _discard(files: list[ReceivedFile]) -> None:
    for received in files:
        received.discard()


def _count_active(state: AppState, tenant: str) -> int:
    with state.sessions() as session:
        return count_active_jobs(session, tenant)


def _check_target(state: AppState, tenant: str, spec: JobSpec) -> None:
    """Refuse a ``latency.target`` that no agent of the tenant ever registered (a device
    registered but offline is fine: the job waits for it)."""
    target = spec.latency.target
    if target is None:
        return
    with state.sessions() as session:
        if device_registered(session, tenant, target):
            return
    raise ServiceError(
        f"latency.target: no device named {target!r} is registered for your tenant; run "
        f"`inferprune agent --server URL --token T --device {target}` on it first "
        "(`inferprune devices` lists yours)",
        code="unknown_device",
        status=422,
    )


def _replay(state: AppState, tenant: str, key: str, request_hash: str) -> JobPublic | None:
    with state.sessions() as session:
        job = find_by_idempotency_key(session, tenant, key)
        if job is None:
            return None
        if job.request_hash != request_hash:
            raise ServiceError(
                f"Idempotency-Key {echo(key)} was already used for a different request; "
                "use a new key",
                code="idempotency_conflict",
                status=422,
            )
        return job_public(session, job)


def _store(
    state: AppState,
    tenant: str,
    accepted: Submission,
    weights: ReceivedFile | None,
    dataset: ReceivedFile | None,
    key: str | None,
    request_hash: str,
) -> JobPublic:
    spec = accepted.spec.to_json_dict()
    with state.sessions.begin() as session:
        weights_blob = (
            state.blobs.put_file(session, weights.path, sha256=weights.sha256) if weights else None
        )
        dataset_blob = (
            state.blobs.put_file(session, dataset.path, sha256=dataset.sha256) if dataset else None
        )
        job = create_job(
            session,
            NewJob(
                tenant=tenant,
                spec=spec,
                trials_total=planned_trials(accepted.spec),
                weights_blob_id=weights_blob.id if weights_blob else None,
                dataset_blob_id=dataset_blob.id if dataset_blob else None,
                dataset_filename=accepted.dataset_filename,
                idempotency_key=key,
                request_hash=request_hash,
            ),
        )
        return job_public(session, job)


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List jobs, newest first",
    responses=_ERRORS,
    operation_id="list_jobs",
)
def list_all(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page.")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Jobs to skip.")] = 0,
) -> JobList:
    """The caller's jobs, newest first, one page at a time."""
    rows, total = list_jobs(session, tenant, limit, offset)
    following = offset + limit
    return JobList(
        items=[job_public(session, job) for job in rows],
        total=total,
        limit=limit,
        offset=offset,
        next=f"/v1/jobs?limit={limit}&offset={following}" if following < total else None,
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobPublic,
    summary="Read a job",
    responses=_ERRORS,
    operation_id="read_job",
)
async def read(job_id: str, state: StateDep, tenant: TenantDep) -> Response:
    """Status, progress with ETA, baseline and (when finished) the chosen model."""
    # The hot path of every client that polls: one trip to the thread pool for the
    # database and the JSON, rather than FastAPI's dependency and validation passes.
    body = await run_in_threadpool(_render_job, state, tenant, job_id)
    return Response(body, media_type="application/json")


def _render_job(state: AppState, tenant: str, job_id: str) -> bytes:
    with state.sessions() as session:
        return job_public(session, get_job(session, tenant, job_id)).model_dump_json().encode()


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a job",
    operation_id="cancel_job",
    responses={**_ERRORS, 409: {"model": ErrorBody, "description": "The job already finished."}},
)
def cancel(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops after the trials in flight
    (what finished is kept); a finalizing one stops its fine-tune."""
    with state.sessions.begin() as session:
        job = request_cancel(session, tenant, job_id)
        return job_public(session, job)
