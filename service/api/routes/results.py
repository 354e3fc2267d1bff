"""A job's results: trials, Pareto front (JSON and PNG), checkpoints in four formats."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from search.pareto import hypervolume, pareto_front, plot_pareto, select_best, trial_points
from search.spec import JobSpec, objective_names
from service.api.deps import SessionDep, StateDep, TenantDep
from service.api.schemas import (
    ErrorBody,
    ParetoPointPublic,
    ParetoPublic,
    TrialList,
)
from service.api.state import AppState
from service.api.views import trial_public
from service.errors import ServiceError
from service.store import REAPED_AFTER_RESULT, Artifact, Job, TrialLog, get_job, put_artifact

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["results"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or unknown token."},
    404: {"model": ErrorBody, "description": "No such job (or trial checkpoint)."},
}

MEDIA_TYPES = {
    "safetensors": "application/octet-stream",
    "onnx": "application/octet-stream",
    "pt2": "application/octet-stream",
    "torchscript": "application/octet-stream",
}
SUFFIXES = {
    "safetensors": ".safetensors",
    "onnx": ".onnx",
    "pt2": ".pt2",
    "torchscript": ".torchscript.pt",
}


def _trials(state: AppState, job: Job) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=job.study_name, storage=state.storage)
    except KeyError:
        return []  # no worker has started the job yet
    return study.get_trials(deepcopy=False)


def _parsed(job: Job) -> JobSpec:
    return JobSpec.model_validate(job.spec)


def _kept(session: Any, job_id: str) -> set[int]:
    rows = session.scalars(
        select(Artifact.trial_number).where(
            Artifact.job_id == job_id, Artifact.kind.in_(("trial", "final"))
        )
    ).all()
    return set(rows)


@router.get(
    "/jobs/{job_id}/trials",
    response_model=TrialList,
    summary="List a job's trials",
    operation_id="list_trials",
    responses=_ERRORS,
)
def trials(job_id: str, session: SessionDep, state: StateDep, tenant: TenantDep) -> TrialList:
    """Every trial so far with its plan, measurements, stage seconds and state."""
    job = get_job(session, tenant, job_id)
    kept = _kept(session, job_id)
    return TrialList(
        objectives=objective_names(_parsed(job)),
        items=[trial_public(t, kept) for t in _trials(state, job)],
    )


@router.get(
    "/jobs/{job_id}/pareto",
    response_model=ParetoPublic,
    summary="The accuracy-versus-cost front",
    operation_id="get_pareto",
    responses=_ERRORS,
)
def pareto(job_id: str, session: SessionDep, state: StateDep, tenant: TenantDep) -> ParetoPublic:
    """Feasible trials no other trial beats on accuracy and MACs (and latency when
    measured), cheapest first, with the chosen trial."""
    job = get_job(session, tenant, job_id)
    spec = _parsed(job)
    all_trials = _trials(state, job)
    points = [p for p in trial_points(all_trials) if p.feasible]
    front = pareto_front(points, with_latency=spec.measures_latency)
    best = (job.best or {}).get("trial")
    if best is None:
        chosen = select_best(spec, all_trials)
        best = chosen.trial if chosen else None
    objectives = ["val_accuracy", "macs"] + (["latency_ms"] if spec.measures_latency else [])
    baseline_macs = (job.baseline or {}).get("macs") or _baseline_macs(state, job)
    return ParetoPublic(
        objectives=objectives,
        points=[
            ParetoPointPublic(
                trial=p.trial,
                val_accuracy=p.val_accuracy,
                macs=p.macs,
                params=p.params,
                latency_ms=p.latency_ms,
                latency_device=p.latency_device,
                latency_source=p.latency_source,
                plan=p.plan,
            )
            for p in front
        ],
        hypervolume=hypervolume(points, baseline_macs) if baseline_macs else None,
        best_trial=best,
    )


def _job_attrs(state: AppState, job: Job) -> dict[str, Any]:
    """What the workers recorded on the job's study (baseline, budget), if it exists."""
    try:
        study_id = state.storage.get_study_id_from_name(job.study_name)
    except KeyError:
        return {}
    attrs = state.storage.get_study_user_attrs(study_id).get("inferprune")
    return attrs if isinstance(attrs, dict) else {}


def _baseline_macs(state: AppState, job: Job) -> int | None:
    """The unpruned MACs the workers recorded on the study (before the job finished)."""
    value = (_job_attrs(state, job).get("baseline") or {}).get("macs")
    return int(value) if value else None


@router.get(
    "/jobs/{job_id}/pareto.png",
    summary="The front as a plot",
    operation_id="get_pareto_png",
    responses={**_ERRORS, 200: {"content": {"image/png": {}}, "description": "A PNG plot."}},
    response_class=Response,
)
def pareto_png(job_id: str, session: SessionDep, state: StateDep, tenant: TenantDep) -> Response:
    """Validation accuracy against MACs for every trial, front joined, baseline starred."""
    job = get_job(session, tenant, job_id)
    stored = session.scalar(
        select(Artifact).where(
            Artifact.job_id == job_id, Artifact.kind == "job", Artifact.format == "png"
        )
    )
    if stored is not None:
        return Response(state.blobs.get(session, stored.blob_id), media_type="image/png")
    all_trials = _trials(state, job)
    attrs = _job_attrs(state, job)
    baseline = attrs.get("baseline") or {}
    budget = attrs.get("budget") or {}
    if not baseline.get("macs"):
        raise ServiceError(
            "no worker has started the job yet; try again shortly", code="not_ready", status=409
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_pareto(
            trial_points(all_trials),
            Path(tmp) / "p.png",
            baseline_macs=int(baseline["macs"]),
            baseline_accuracy=float(baseline.get("val_accuracy") or 0.0),
            max_macs=budget.get("max_macs"),
            title=f"job {job_id[:8]}",
        )
        return Response(path.read_bytes(), media_type="image/png")


@router.get(
    "/jobs/{job_id}/checkpoint",
    summary="Download a pruned model",
    operation_id="get_checkpoint",
    response_class=Response,
    responses={
        **_ERRORS,
        200: {"content": {"application/octet-stream": {}}, "description": "The model file."},
        409: {"model": ErrorBody, "description": "The chosen model is not ready."},
        422: {
            "model": ErrorBody,
            "description": "The model cannot be exported to this format (the message says why).",
        },
    },
)
async def checkpoint(
    job_id: str,
    state: StateDep,
    tenant: TenantDep,
    trial: Annotated[
        int | None,
        Query(
            ge=0,
            le=1_000_000_000,
            description="A trial on the Pareto front; omit for the chosen, finalized model.",
        ),
    ] = None,
    format: Annotated[
        Literal["safetensors", "onnx", "pt2", "torchscript"],
        Query(
            description="safetensors (with metadata to rebuild the structure), onnx (dynamic "
            "batch), pt2 (torch.export) or torchscript."
        ),
    ] = "safetensors",
) -> Response:
    """The chosen model (after its final fine-tune), or the weights a Pareto trial had
    after its short fine-tune. Formats other than safetensors are made on first request
    (outputs checked against torch) and kept."""
    data, name = await run_in_threadpool(_checkpoint, state, tenant, job_id, trial, format)
    return Response(
        data,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _checkpoint(
    state: AppState, tenant: str, job_id: str, trial: int | None, fmt: str
) -> tuple[bytes, str]:
    with state.sessions() as session:
        job = get_job(session, tenant, job_id)
        best = (job.best or {}).get("trial") if job.status == "succeeded" else None
        if trial is None:
            if best is None:
                raise ServiceError(
                    f"the job is {job.status}; the chosen model exists once it has succeeded "
                    "(a Pareto trial's weights are available sooner with ?trial=N)",
                    code="not_ready",
                    status=409,
                )
            kind, number = "final", int(best)
        elif trial == best:
            kind, number = "final", trial
        else:
            kind, number = "trial", trial
        rows = {
            a.format: a
            for a in session.scalars(
                select(Artifact).where(
                    Artifact.job_id == job_id,
                    Artifact.kind == kind,
                    Artifact.trial_number == number,
                )
            )
        }
        name = f"job-{job_id[:8]}-trial-{number}{SUFFIXES[fmt]}"
        if fmt in rows:
            return state.blobs.get(session, rows[fmt].blob_id), name
        if "safetensors" not in rows:
            raise ServiceError(
                _lost_weights(session, job_id, number)
                or f"trial {number} has no kept weights: only the chosen trial and the Pareto "
                "front are kept (GET /pareto lists them)",
                code="not_found",
                status=404,
            )
        weights = state.blobs.get(session, rows["safetensors"].blob_id)
    data = _convert(weights, fmt)  # a ModelsError (ExportError) is answered 422 with its message
    try:
        with state.sessions.begin() as session:
            put_artifact(
                session,
                state.blobs,
                job_id=job_id,
                kind=kind,
                trial_number=number,
                fmt=fmt,
                data=data,
            )
    except IntegrityError:  # another request stored the same conversion first: fine
        logger.info("job %s trial %s: %s kept by a concurrent request", job_id, number, fmt)
    return data, name


def _lost_weights(session: Any, job_id: str, number: int) -> str | None:
    """Say so where trial ``number``'s worker died after recording its result and before
    storing its weights (None for any other trial)."""
    lost = session.scalar(
        select(TrialLog.id).where(
            TrialLog.job_id == job_id,
            TrialLog.trial_number == number,
            TrialLog.error == REAPED_AFTER_RESULT,
        )
    )
    if lost is None:
        return None
    return (
        f"trial {number}'s weights were lost with its worker, which died after recording the "
        "trial's result and before storing them; its plan is in GET /pareto (or /trials): "
        "`inferprune apply --plan plan.json` prunes the unpruned model to it (not fine-tuned)"
    )


def _convert(weights: bytes, fmt: str) -> bytes:
    """Return the stored checkpoint ``weights`` exported to ``fmt``.

    Raises:
        ModelsError: the checkpoint does not load, or the export fails its checks
            (:class:`~models.errors.ExportError`).
    """
    from models.errors import ExportError
    from models.io import export_model, load_pruned, read_checkpoint_info
    from search.loading import ONNX_ARCH

    if read_checkpoint_info(weights).arch == ONNX_ARCH:
        raise ExportError(
            "this job pruned an uploaded ONNX model: its chosen model downloads as "
            "?format=onnx; other formats, and the Pareto trials' weights, need a zoo "
            "architecture to rebuild the structure"
        )
    model, info = load_pruned(weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"model{SUFFIXES[fmt]}"
        export_model(model, info.input_shape, fmt, path)
        return path.read_bytes()
