"""blob chunks: database blobs stored a MiB per row

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:30:00

Blobs written before this revision keep their bytes in ``inferprune_blobs.data`` and
stay readable; new ones go to ``inferprune_blob_chunks``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inferprune_blob_chunks",
        sa.Column("blob_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["inferprune_blobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("blob_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("inferprune_blob_chunks")
