"""A worker process: claim work, do it, renew leases, reap the dead, repeat."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from types import FrameType

import optuna
import torch
from sqlalchemy.orm import Session, sessionmaker

from models.device import describe_device, resolve_device
from models.errors import ModelsError
from search import JobSpec, SearchError, requeue_trial
from service.logs import log_context
from service.settings import Settings
from service.store import (
    REAPED_ERROR,
    BlobStore,
    Claim,
    ClaimKind,
    JobStatus,
    ReapedLease,
    TrialOutcome,
    check_schema,
    claim_work,
    fail_job,
    finish_trial,
    hand_back_finalize,
    has_open_work,
    heartbeat,
    make_engine,
    make_session_factory,
    reap_expired,
    register_worker,
    release_finalize,
    stop_worker,
)
from service.worker._inputs import JobInputs, ProblemCache, optuna_storage
from service.worker._remote_meter import DeviceMeters, DeviceUnavailable, WaitAbandoned
from service.worker._retry import DATABASE_ERRORS, retry_database
from service.worker._units import UnitContext, run_finalize_unit, run_trial_unit

__all__ = ["Worker", "run_worker"]

logger = logging.getLogger(__name__)


class Worker:
    """One worker: a loop that claims trials and finalizations from the store.

    It needs nothing but the database URL (and a local folder for caches): uploads and
    artifacts travel through the store. A background thread renews its leases every
    ``heartbeat_seconds``; if the process dies, the leases expire and another worker
    reaps them, so the job loses at most the trial in flight.

    Not thread-safe: one Worker per process.
    """

    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # a device that is not there stops the worker here, not the jobs it would claim
        self.device = resolve_device(settings.device, flag="worker device")
        self.engine = make_engine(settings.database_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.blobs = BlobStore(settings.artifact_root)
        self.inputs = JobInputs(self.blobs, settings.data_dir)
        self._storage: optuna.storages.RDBStorage | None = None
        self._cache: ProblemCache | None = None
        self._active: set[str] = set()  # leases this worker is working on
        self._active_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """Optuna's storage on the store's database (connected on first use)."""
        if self._storage is None:
            self._storage = optuna_storage(self.settings.database_url)
        return self._storage

    @property
    def cache(self) -> ProblemCache:
        """The jobs this worker has loaded."""
        if self._cache is None:
            meters = DeviceMeters(
                self.sessions,
                self.blobs,
                timeout_s=self.settings.device_timeout_s,
                live_seconds=self.settings.agent_live_seconds,
            )
            self._cache = ProblemCache(
                self.storage, self.id, sessions=self.sessions, device=self.device, meters=meters
            )
        return self._cache

    # -- lifecycle -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to stop after the current unit of work."""
        self._stop.set()

    def run(self, *, max_units: int | None = None, exit_when_idle: bool = False) -> int:
        """Work until stopped; return how many units were done.

        Args:
            max_units: stop after this many units (tests, benchmarks).
            exit_when_idle: stop as soon as no work is available.
        """

        def start() -> None:
            check_schema(self.engine, hint="inferprune db upgrade")
            with self.sessions.begin() as session:
                register_worker(session, self.id, socket.gethostname(), os.getpid())
            _ = self.storage  # Optuna checks its own tables once

        retry_database(start, what="start the worker")
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        logger.info("worker %s started", self.id, extra={"worker": self.id})
        done = 0
        try:
            while not self._stop.is_set():
                try:
                    self._reap()
                    claim = self._claim()
                except DATABASE_ERRORS as exc:  # a restart or failover: wait it out
                    logger.warning("database unavailable (%s); retrying", type(exc).__name__)
                    self._stop.wait(max(self.settings.poll_seconds, 1.0))
                    continue
                if claim is None:
                    if exit_when_idle:
                        break
                    self._stop.wait(self.settings.poll_seconds)
                    continue
                with self._active_lock:
                    self._active.add(claim.lease_id)
                with log_context(job=claim.job_id, worker=self.id):
                    try:
                        self._do(claim)
                    except DATABASE_ERRORS as exc:
                        # stop renewing the lease: it expires and the unit is handed back
                        logger.warning(
                            "lost the database during %s (%s)", claim.kind, type(exc).__name__
                        )
                        continue
                    finally:
                        with self._active_lock:
                            self._active.discard(claim.lease_id)
                done += 1
                if max_units is not None and done >= max_units:
                    break
        finally:
            self._stop.set()
            try:
                with self.sessions.begin() as session:
                    stop_worker(session, self.id)
            except DATABASE_ERRORS:
                logger.warning("could not record the worker's stop: database unavailable")
            self.engine.dispose()
            logger.info(
                "worker %s stopped after %d units", self.id, done, extra={"worker": self.id}
            )
        return done

    def _claim(self, attempts: int = 20) -> Claim | None:
        """Claim work; when the claim lost a race for a locked row (work exists but none
        was free for us), retry after a short random pause instead of idling."""
        for _ in range(attempts):
            with self.sessions.begin() as session:
                claim = claim_work(session, self.id, self.settings.lease_seconds)
                if claim is not None or not has_open_work(session):
                    return claim
            time.sleep(random.uniform(0.005, 0.05))
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with self.sessions.begin() as session:
                    with self._active_lock:
                        leases = set(self._active)
                    heartbeat(session, self.id, self.settings.lease_seconds, leases)
            except Exception:  # a database blip must not kill the worker
                logger.warning("heartbeat failed; retrying", exc_info=True)

    # -- work ----------------------------------------------------------------------------
    def _context(self) -> UnitContext:
        return UnitContext(
            self.sessions,
            self.blobs,
            self.storage,
            self.id,
            self.settings.max_failed_trials,
            self._stop.is_set,
            self.settings.max_trial_attempts,
        )

    def _do(self, claim: Claim) -> None:
        extra = {"job": claim.job_id, "worker": self.id}
        logger.info("claimed %s of job %s", claim.kind, claim.job_id, extra=extra)
        try:
            # the spec is checked again here, limits included: a store written by an
            # older server (or by hand) must not make this worker allocate without bound
            spec = JobSpec.model_validate(claim.spec)
            with self.sessions() as session:
                weights = self.inputs.weights(session, claim)
                dataset = self.inputs.dataset(session, claim)
            loaded = self.cache.get(
                claim, spec, weights=weights, dataset=dataset, data_root=self.settings.data_root
            )
        except DATABASE_ERRORS:
            raise
        except DeviceUnavailable as exc:
            logger.error("job %s cannot start: %s", claim.job_id, exc.message, extra=extra)
            self._end_claim(claim, exc.message, exc.code)
            return
        except WaitAbandoned as exc:  # cancelled while the baseline waited for its device
            logger.info("job %s: %s", claim.job_id, exc.message, extra=extra)
            self._end_claim(claim, exc.message)
            return
        except (ModelsError, SearchError, ValueError, OSError, MemoryError, RuntimeError) as exc:
            # the job's inputs cannot work (RuntimeError: torch refusing an allocation);
            # no retry will fix that, and it must never take the worker down with it
            message = f"{type(exc).__name__}: {exc}"
            logger.error("job %s cannot start: %s", claim.job_id, message, extra=extra)
            self._end_claim(claim, message, "invalid_input")
            return
        if claim.kind == ClaimKind.trial:
            run_trial_unit(self._context(), claim, loaded.problem, loaded.study)
            return
        try:
            status = run_finalize_unit(self._context(), claim, loaded.problem, loaded.study)
        except DATABASE_ERRORS:
            raise
        except KeyboardInterrupt:  # aborted: the next worker finalizes the job
            with self.sessions.begin() as session:
                hand_back_finalize(session, claim.lease_id)
            raise
        except WaitAbandoned as exc:  # cancelled while the delivery waited for its device
            self._end_claim(claim, exc.message)
            status = JobStatus.cancelled
        except Exception as exc:
            logger.exception("finalizing job %s failed", claim.job_id, extra=extra)
            with self.sessions.begin() as session:
                release_finalize(
                    session,
                    claim.lease_id,
                    status=JobStatus.failed,
                    error_code=getattr(exc, "code", "finalize_failed"),
                    error_message=f"finalization failed: {exc}",
                )
            status = JobStatus.failed
        self.cache.drop(claim.job_id)
        logger.info("job %s %s", claim.job_id, status, extra=extra)

    def _end_claim(self, claim: Claim, message: str, code: str | None = None) -> None:
        """End a claim that cannot be worked on: its job fails with ``code``, or, with
        no code, ends cancelled (it was cancelled while the claim waited)."""
        status = JobStatus.cancelled if code is None else JobStatus.failed
        with self.sessions.begin() as session:
            if claim.kind == ClaimKind.finalize:
                release_finalize(
                    session,
                    claim.lease_id,
                    status=status,
                    error_code=code,
                    error_message=None if code is None else message,
                )
                return
            finish_trial(
                session,
                claim.lease_id,
                state=TrialOutcome.abandoned,
                seconds=0.0,
                trial_number=None,
                worker_id=self.id,
                error=message,
                max_failed_trials=self.settings.max_failed_trials,
            )
            if code is not None:
                fail_job(session, claim.job_id, code, message)

    def _reap(self) -> None:
        with self.sessions.begin() as session:
            reaped = reap_expired(
                session, max_failed_trials=self.settings.max_failed_trials, told=self._told
            )
        for lease in reaped:
            logger.warning(
                "reaped %s of job %s from lost worker %s%s",
                lease.kind,
                lease.job_id,
                lease.worker_id,
                " (its result stands)" if lease.result_recorded else "",
                extra={"job": lease.job_id},
            )
            if (
                lease.kind == ClaimKind.trial
                and lease.trial_number is not None
                and not lease.result_recorded
            ):
                self._retry(lease)

    def _told(self, study_name: str, trial_number: int) -> tuple[TrialOutcome, int] | None:
        """Return the outcome the study holds for a lost trial, and how many trials it
        holds queued, if the trial's worker told its result before dying (None if not:
        the trial is lost and is retried)."""
        try:
            study = optuna.load_study(study_name=study_name, storage=self.storage)
            trial = study.trials[trial_number]
        except (KeyError, IndexError):
            return None
        states = optuna.trial.TrialState
        if trial.state not in (states.COMPLETE, states.PRUNED):
            return None
        queued = len(study.get_trials(deepcopy=False, states=(states.WAITING,)))
        return TrialOutcome(trial.state.name.lower()), queued

    def _retry(self, lease: ReapedLease) -> None:
        """Fail the lost trial in Optuna and queue it again (attempts capped): resumed
        from its last finished rung when it trains in rungs, else redone."""
        try:
            study = optuna.load_study(study_name=lease.study_name, storage=self.storage)
            trial = study.trials[lease.trial_number] if lease.trial_number is not None else None
        except (KeyError, IndexError):
            return
        if trial is None:
            return
        states = optuna.trial.TrialState
        if trial.state in (states.COMPLETE, states.PRUNED):
            return  # told after the reaper looked (a worker alive after all): it stands
        if trial.state == states.RUNNING:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.storage.get_study_id_from_name(lease.study_name), trial.number
            )
            self.storage.set_trial_user_attr(trial_id, "error", REAPED_ERROR)
            study.tell(trial.number, state=states.FAIL)
        requeue_trial(study, trial, max_attempts=self.settings.max_trial_attempts)


def run_worker(settings: Settings, *, threads: int | None = None) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; return its exit status.

    The first signal stops the loop after the current unit; a second one aborts it
    (the trial in flight is released for another worker to redo).
    """
    torch.set_num_threads(threads or settings.torch_threads or max(1, os.cpu_count() or 1))
    worker = Worker(settings)
    logger.info("worker %s trains on %s", worker.id, describe_device(worker.device))
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        worker.stop()
        if signals["count"] > 1:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run()
    except KeyboardInterrupt:
        return 130
    return 0
