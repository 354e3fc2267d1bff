"""devices: target-device agents, their measurement queue, agent-only tokens, job detail

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inferprune_tokens") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="full")
        )
    with op.batch_alter_table("inferprune_jobs") as batch:
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))
    op.create_table(
        "inferprune_agents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inferprune_agents_device", "inferprune_agents", ["tenant", "device"])
    op.create_table(
        "inferprune_measurements",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("models", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["blob_id"], ["inferprune_blobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "device", "key", name="uq_inferprune_measurements_key"),
    )
    op.create_index(
        "ix_inferprune_measurements_queue",
        "inferprune_measurements",
        ["tenant", "device", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_inferprune_measurements_queue", table_name="inferprune_measurements")
    op.drop_table("inferprune_measurements")
    op.drop_index("ix_inferprune_agents_device", table_name="inferprune_agents")
    op.drop_table("inferprune_agents")
    with op.batch_alter_table("inferprune_jobs") as batch:
        batch.drop_column("detail")
    with op.batch_alter_table("inferprune_tokens") as batch:
        batch.drop_column("scope")
