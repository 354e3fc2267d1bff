"""``/v1/jobs``: submit, list, read and cancel jobs."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from service.api.deps import SessionDep, StateDep, TenantDep
from service.api.schemas import ErrorBody, JobList, JobPublic
from service.api.state import AppState
from service.api.views import job_public
from service.errors import ServiceError
from service.store import (
    NewJob,
    count_active_jobs,
    create_job,
    find_by_idempotency_key,
    get_job,
    list_jobs,
    request_cancel,
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

PUBLIC_DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion_mnist")

SPEC_HELP = (
    "The job spec as JSON text, e.g. "
    '`{"arch": "resnet20_cifar", "dataset": "digits", "budget": {"flops": 0.5}, '
    '"search": {"trials": 20}}`. See the JobSpec schema for every field. Use '
    '`"dataset": "upload"` with a `dataset` file.'
)


async def _read(upload: UploadFile | None) -> tuple[bytes | None, str | None]:
    if upload is None:
        return None, None
    data = await upload.read()
    return data, Path(upload.filename or "upload").name


def _request_hash(spec: dict[str, Any], weights: bytes | None, dataset: bytes | None) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for part in (weights, dataset):
        digest.update(b"|" + (hashlib.sha256(part).hexdigest().encode() if part else b"-"))
    return digest.hexdigest()


def _validate(
    state: AppState,
    spec_text: str,
    weights: bytes | None,
    dataset: bytes | None,
    dataset_name: str | None,
) -> dict[str, Any]:
    """Check everything about a submission that needs torch; return the spec to store."""
    from service.uploads import (
        UploadError,
        validate_budget,
        validate_dataset,
        validate_spec_json,
        validate_weights,
    )

    spec = validate_spec_json(spec_text)
    limit = state.settings.max_trials_per_job
    if spec.search.trials > limit:
        raise UploadError(
            "too_many_trials",
            f"search.trials is {spec.search.trials}; this "
            f"server allows at most {limit} per job (INFERPRUNE_MAX_TRIALS_PER_JOB)",
        )
    if dataset is not None and spec.dataset != "upload":
        raise UploadError(
            "invalid_spec",
            'a dataset file was uploaded: set "dataset": "upload" in the spec to use it',
        )
    if dataset is None and spec.dataset == "upload":
        raise UploadError(
            "invalid_spec",
            '"dataset": "upload" needs a `dataset` file (.npz, or an image-folder .zip/.tar)',
        )
    if dataset is None and spec.dataset not in PUBLIC_DATASETS:
        raise UploadError(
            "invalid_spec",
            f"dataset {spec.dataset!r} is not available here: use "
            f"one of {', '.join(PUBLIC_DATASETS)} or upload a file",
        )
    if weights is not None:
        validate_weights(spec, weights)
    if dataset is not None:
        workdir = Path(tempfile.mkdtemp(prefix="inferprune-upload-"))
        try:
            path = workdir / (dataset_name or "dataset.npz")
            path.write_bytes(dataset)
            validate_dataset(spec, path, path.name, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    validate_budget(spec, weights)
    return spec.to_json_dict()


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
        422: {"model": ErrorBody, "description": "Invalid spec, weights, dataset or budget."},
        429: {"model": ErrorBody, "description": "Too many active jobs for this tenant."},
    },
)
async def submit_job(
    request: Request,
    response: Response,
    state: StateDep,
    tenant: TenantDep,
    spec: Annotated[str, Form(description=SPEC_HELP)],
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
            "val/test) or a .zip/.tar of class folders of images."
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
    weights_bytes, _ = await _read(weights)
    dataset_bytes, dataset_name = await _read(dataset)
    if idempotency_key:
        existing = await run_in_threadpool(
            _replay, state, tenant, idempotency_key, spec, weights_bytes, dataset_bytes
        )
        if existing is not None:
            response.status_code = 200
            response.headers["Location"] = existing.links.self
            return existing
    with state.sessions() as session:
        active = count_active_jobs(session, tenant)
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
        weights_bytes,
        dataset_bytes,
        dataset_name,
        limiter=_VALIDATION_SLOTS,
    )
    job = await run_in_threadpool(
        _store,
        state,
        tenant,
        accepted,
        weights_bytes,
        dataset_bytes,
        dataset_name,
        idempotency_key,
        spec,
    )
    response.headers["Location"] = job.links.self
    return job


def _replay(
    state: AppState,
    tenant: str,
    key: str,
    spec_text: str,
    weights: bytes | None,
    dataset: bytes | None,
) -> JobPublic | None:
    with state.sessions() as session:
        job = find_by_idempotency_key(session, tenant, key)
        if job is None:
            return None
        try:
            raw = json.loads(spec_text)
        except json.JSONDecodeError:
            raw = spec_text
        if job.request_hash != _request_hash({"spec": raw}, weights, dataset):
            raise ServiceError(
                f"Idempotency-Key {key!r} was already used for a different request; use a new key",
                code="idempotency_conflict",
                status=422,
            )
        return job_public(session, job)


def _store(
    state: AppState,
    tenant: str,
    spec: dict[str, Any],
    weights: bytes | None,
    dataset: bytes | None,
    dataset_name: str | None,
    key: str | None,
    spec_text: str,
) -> JobPublic:
    try:
        raw = json.loads(spec_text)
    except json.JSONDecodeError:
        raw = spec_text
    with state.sessions.begin() as session:
        weights_blob = state.blobs.put(session, weights) if weights is not None else None
        dataset_blob = state.blobs.put(session, dataset) if dataset is not None else None
        job = create_job(
            session,
            NewJob(
                tenant=tenant,
                spec=spec,
                trials_total=int(spec["search"]["trials"]),
                weights_blob_id=weights_blob.id if weights_blob else None,
                dataset_blob_id=dataset_blob.id if dataset_blob else None,
                dataset_filename=dataset_name,
                idempotency_key=key,
                request_hash=_request_hash({"spec": raw}, weights, dataset),
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
