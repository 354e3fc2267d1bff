"""The SQL store: jobs, uploads, artifacts, tokens, leases (SQLAlchemy + Alembic).

One database holds our tables (all ``inferprune_*``, migrated by ``inferprune db
upgrade`` with their own version table) and the Optuna studies. SQLite in WAL mode is
the embedded default; the same code runs on PostgreSQL for several machines.
"""

from service.store._artifacts import drop_trial_artifacts_except, get_artifact, put_artifact
from service.store._blobs import BlobStore
from service.store._claims import Claim, claim_work, has_open_work, set_lease_trial
from service.store._engine import engine_options, is_sqlite, make_engine, make_session_factory
from service.store._jobs import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    JobNotFound,
    NewJob,
    count_active_jobs,
    create_job,
    find_by_idempotency_key,
    get_job,
    list_jobs,
    recent_trials,
    request_cancel,
    trial_seconds,
)
from service.store._leases import (
    ReapedLease,
    fail_job,
    finish_finalize,
    finish_trial,
    reap_expired,
    release_finalize,
    set_best_so_far,
)
from service.store._migrations import (
    SchemaOutdatedError,
    check_schema,
    current_revision,
    head_revision,
    upgrade_schema,
)
from service.store._tables import (
    Artifact,
    Base,
    Blob,
    Job,
    Lease,
    Token,
    TrialLog,
    WorkerRow,
    utcnow,
)
from service.store._tokens import authenticate, create_token, hash_token
from service.store._workers import heartbeat, register_worker, stop_worker

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "Artifact",
    "Base",
    "Blob",
    "BlobStore",
    "Claim",
    "Job",
    "JobNotFound",
    "Lease",
    "NewJob",
    "ReapedLease",
    "SchemaOutdatedError",
    "Token",
    "TrialLog",
    "WorkerRow",
    "authenticate",
    "check_schema",
    "claim_work",
    "count_active_jobs",
    "create_job",
    "create_token",
    "current_revision",
    "drop_trial_artifacts_except",
    "engine_options",
    "fail_job",
    "find_by_idempotency_key",
    "get_artifact",
    "finish_finalize",
    "finish_trial",
    "get_job",
    "has_open_work",
    "hash_token",
    "head_revision",
    "heartbeat",
    "is_sqlite",
    "list_jobs",
    "make_engine",
    "make_session_factory",
    "put_artifact",
    "reap_expired",
    "recent_trials",
    "register_worker",
    "release_finalize",
    "request_cancel",
    "set_best_so_far",
    "set_lease_trial",
    "stop_worker",
    "trial_seconds",
    "upgrade_schema",
    "utcnow",
]
