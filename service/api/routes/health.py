"""``/healthz`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from service.api.deps import StateDep
from service.api.state import AppState
from service.store import (
    SEARCHING_STATUSES,
    AgentRow,
    Job,
    JobStatus,
    Lease,
    Measurement,
    MeasurementStatus,
    TrialLog,
    TrialOutcome,
    WorkerRow,
    utcnow,
)

__all__ = ["StoreCollector", "router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and database reachability")
def healthz(state: StateDep) -> dict[str, Any]:
    """``{"status": "ok"}`` when the database answers; 503 otherwise."""
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        from service.errors import ServiceError

        raise ServiceError(
            f"database unreachable: {type(exc).__name__}", code="unavailable", status=503
        ) from exc
    return {"status": "ok", "database": state.engine.dialect.name}


class StoreCollector(Collector):
    """Prometheus metrics read from the store at scrape time, so they cover every worker
    on every machine, not just this process."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        settings = self.state.settings
        now = utcnow()
        with self.state.sessions() as session:
            by_status = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            trials = dict(
                session.execute(select(TrialLog.state, func.count()).group_by(TrialLog.state)).all()
            )
            seconds = session.execute(
                select(func.count(), func.coalesce(func.sum(TrialLog.seconds), 0.0)).where(
                    TrialLog.state.in_((TrialOutcome.complete, TrialOutcome.pruned))
                )
            ).one()
            lost = session.scalar(
                select(func.count())
                .select_from(TrialLog)
                .where(TrialLog.error.like("worker lost%"))
            )
            remaining = session.scalar(
                select(
                    func.coalesce(
                        func.sum(Job.trials_total - Job.trials_finished - Job.trials_running), 0
                    )
                ).where(Job.status.in_(SEARCHING_STATUSES), Job.cancel_requested.is_(False))
            )
            running = session.scalar(select(func.count()).select_from(Lease))
            alive = session.scalar(
                select(func.count())
                .select_from(WorkerRow)
                .where(
                    WorkerRow.stopped_at.is_(None),
                    WorkerRow.heartbeat_at > now - timedelta(seconds=settings.lease_seconds),
                )
            )
            measurements = dict(
                session.execute(
                    select(Measurement.status, func.count()).group_by(Measurement.status)
                ).all()
            )
            agents = session.scalar(
                select(func.count())
                .select_from(AgentRow)
                .where(
                    AgentRow.stopped_at.is_(None),
                    AgentRow.last_seen_at > now - timedelta(seconds=settings.agent_live_seconds),
                )
            )
        jobs = GaugeMetricFamily("inferprune_jobs", "Jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status], float(by_status.get(status, 0)))
        yield jobs
        counter = CounterMetricFamily(
            "inferprune_trials", "Finished trial attempts by state.", labels=["state"]
        )
        for state in TrialOutcome:
            counter.add_metric([state], float(trials.get(state, 0)))
        yield counter
        summary = SummaryMetricFamily(
            "inferprune_trial_seconds", "Wall-clock seconds of completed and pruned trials."
        )
        summary.add_metric([], count_value=int(seconds[0]), sum_value=float(seconds[1]))
        yield summary
        yield CounterMetricFamily(
            "inferprune_trial_failures",
            "Trial attempts that failed (errors and lost workers).",
            value=float(trials.get(TrialOutcome.fail, 0)),
        )
        yield CounterMetricFamily(
            "inferprune_trial_retries",
            "Trials retried because their worker was lost.",
            value=float(lost or 0),
        )
        yield GaugeMetricFamily(
            "inferprune_queue_depth",
            "Trials still to start over all queued and running jobs.",
            value=float(remaining or 0),
        )
        yield GaugeMetricFamily(
            "inferprune_units_running",
            "Trials and finalizations being worked on now.",
            value=float(running or 0),
        )
        yield GaugeMetricFamily(
            "inferprune_workers_active",
            "Workers whose heartbeat is within the lease time.",
            value=float(alive or 0),
        )
        queue = GaugeMetricFamily(
            "inferprune_measurements",
            "Latency measurements for target devices by status (done ones are the cache).",
            labels=["status"],
        )
        for measurement_status in MeasurementStatus:
            count = measurements.get(measurement_status, 0)
            queue.add_metric([measurement_status], float(count))
        yield queue
        yield GaugeMetricFamily(
            "inferprune_agents_live",
            "Device agents that asked for work within the live window.",
            value=float(agents or 0),
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(state: StateDep) -> Response:
    """Jobs by status, trials by state, trial seconds, queue depth, active workers,
    device measurements by status and live agents."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(state))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
