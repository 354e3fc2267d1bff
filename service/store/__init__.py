"""The SQL store: jobs, uploads, artifacts, tokens, leases, sensitivity scans (SQLAlchemy
+ Alembic).

One database holds our tables (all ``inferprune_*``, migrated by ``inferprune db
upgrade`` with their own version table) and the Optuna studies. SQLite in WAL mode is
the embedded default; the same code runs on PostgreSQL for several machines.
"""

from service.store._artifacts import drop_trial_artifacts_except, get_artifact, put_artifact
from service.store._blobs import BlobStore, file_sha256
from service.store._claims import Claim, claim_work, has_open_work, set_lease_trial
from service.store._engine import engine_options, is_sqlite, make_engine, make_session_factory
from service.store._jobs import (
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
    hand_back_finalize,
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
from service.store._sensitivity import SensitivityKey, get_sensitivity, put_sensitivity
from service.store._states import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    SEARCHING_STATUSES,
    ClaimKind,
    JobStatus,
    TrialOutcome,
)
from service.store._tables import (
    Artifact,
    Base,
    Blob,
    BlobChunk,
    Job,
    Lease,
    SensitivityScan,
    Token,
    TrialLog,
    WorkerRow,
    utcnow,
)
from service.store._tenants import DeletedTenant, delete_tenant
from service.store._tokens import (
    TenantNotFound,
    TokenInfo,
    TokenNotFound,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    require_tenant,
    revoke_tenant,
    revoke_token,
)
from service.store._workers import heartbeat, register_worker, stop_worker

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "SEARCHING_STATUSES",
    "Artifact",
    "Base",
    "Blob",
    "BlobChunk",
    "BlobStore",
    "Claim",
    "ClaimKind",
    "DeletedTenant",
    "Job",
    "JobNotFound",
    "JobStatus",
    "Lease",
    "NewJob",
    "ReapedLease",
    "SchemaOutdatedError",
    "SensitivityKey",
    "SensitivityScan",
    "TenantNotFound",
    "Token",
    "TokenInfo",
    "TokenNotFound",
    "TrialLog",
    "TrialOutcome",
    "WorkerRow",
    "authenticate",
    "check_schema",
    "claim_work",
    "count_active_jobs",
    "create_job",
    "create_token",
    "current_revision",
    "delete_tenant",
    "drop_trial_artifacts_except",
    "engine_options",
    "fail_job",
    "file_sha256",
    "find_by_idempotency_key",
    "get_artifact",
    "finish_finalize",
    "finish_trial",
    "get_job",
    "get_sensitivity",
    "hand_back_finalize",
    "has_open_work",
    "hash_token",
    "head_revision",
    "heartbeat",
    "is_sqlite",
    "list_jobs",
    "list_tokens",
    "make_engine",
    "make_session_factory",
    "put_artifact",
    "put_sensitivity",
    "reap_expired",
    "recent_trials",
    "register_worker",
    "require_tenant",
    "release_finalize",
    "request_cancel",
    "revoke_tenant",
    "revoke_token",
    "set_best_so_far",
    "set_lease_trial",
    "stop_worker",
    "trial_seconds",
    "upgrade_schema",
    "utcnow",
]
