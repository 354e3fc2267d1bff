"""sensitivity: per-group sensitivity scans, cached per weights and settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inferprune_sensitivity",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("arch", sa.String(length=128), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("input_shape", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=255), nullable=False),
        sa.Column("criterion", sa.String(length=32), nullable=False),
        sa.Column("round_to", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("fractions", sa.String(length=128), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "weights_sha256",
            "arch",
            "num_classes",
            "input_shape",
            "dataset",
            "criterion",
            "round_to",
            "seed",
            "fractions",
            name="uq_inferprune_sensitivity_key",
        ),
    )


def downgrade() -> None:
    op.drop_table("inferprune_sensitivity")
