"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:34:16.593081
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "inferprune_blobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inferprune_blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inferprune_blobs_sha256"), ["sha256"], unique=False)

    op.create_table(
        "inferprune_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("inferprune_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inferprune_tokens_tenant"), ["tenant"], unique=False)

    op.create_table(
        "inferprune_workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inferprune_workers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inferprune_workers_heartbeat_at"), ["heartbeat_at"], unique=False
        )

    op.create_table(
        "inferprune_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("study_name", sa.String(length=128), nullable=False),
        sa.Column("weights_blob_id", sa.String(length=32), nullable=True),
        sa.Column("dataset_blob_id", sa.String(length=32), nullable=True),
        sa.Column("dataset_filename", sa.String(length=255), nullable=True),
        sa.Column("trials_total", sa.Integer(), nullable=False),
        sa.Column("trials_finished", sa.Integer(), nullable=False),
        sa.Column("trials_running", sa.Integer(), nullable=False),
        sa.Column("trials_failed", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=True),
        sa.Column("best", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("deadline_at", sa.DateTime(), nullable=True),
        sa.Column("last_claimed_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_blob_id"],
            ["inferprune_blobs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["weights_blob_id"],
            ["inferprune_blobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_inferprune_jobs_idempotency"),
    )
    with op.batch_alter_table("inferprune_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_inferprune_jobs_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_inferprune_jobs_tenant_created", ["tenant", "created_at"], unique=False
        )

    op.create_table(
        "inferprune_artifacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_id"],
            ["inferprune_blobs.id"],
        ),
        sa.ForeignKeyConstraint(["job_id"], ["inferprune_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "job_id", "kind", "trial_number", "format", name="uq_inferprune_artifacts"
        ),
    )
    with op.batch_alter_table("inferprune_artifacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inferprune_artifacts_job_id"), ["job_id"], unique=False
        )

    op.create_table(
        "inferprune_leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["inferprune_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inferprune_leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inferprune_leases_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_inferprune_leases_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inferprune_leases_worker_id"), ["worker_id"], unique=False
        )

    op.create_table(
        "inferprune_trial_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["inferprune_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inferprune_trial_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inferprune_trial_log_finished_at"), ["finished_at"], unique=False
        )
        batch_op.create_index("ix_inferprune_trial_log_job", ["job_id", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("inferprune_trial_log", schema=None) as batch_op:
        batch_op.drop_index("ix_inferprune_trial_log_job")
        batch_op.drop_index(batch_op.f("ix_inferprune_trial_log_finished_at"))

    op.drop_table("inferprune_trial_log")
    with op.batch_alter_table("inferprune_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inferprune_leases_worker_id"))
        batch_op.drop_index(batch_op.f("ix_inferprune_leases_job_id"))
        batch_op.drop_index(batch_op.f("ix_inferprune_leases_expires_at"))

    op.drop_table("inferprune_leases")
    with op.batch_alter_table("inferprune_artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inferprune_artifacts_job_id"))

    op.drop_table("inferprune_artifacts")
    with op.batch_alter_table("inferprune_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_inferprune_jobs_tenant_created")
        batch_op.drop_index("ix_inferprune_jobs_status")

    op.drop_table("inferprune_jobs")
    with op.batch_alter_table("inferprune_workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inferprune_workers_heartbeat_at"))

    op.drop_table("inferprune_workers")
    with op.batch_alter_table("inferprune_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inferprune_tokens_tenant"))

    op.drop_table("inferprune_tokens")
    with op.batch_alter_table("inferprune_blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inferprune_blobs_sha256"))

    op.drop_table("inferprune_blobs")
