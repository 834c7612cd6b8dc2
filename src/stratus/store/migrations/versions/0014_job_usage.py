"""Jobs' usage records: wall time, CPU seconds and GB-seconds of each worker run.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_usage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("experiment", sa.String(63), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("memory_limit_mb", sa.Integer(), nullable=True),
        sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("billed_memory_mb", sa.Integer(), nullable=False),
        sa.Column("gb_seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_job_usage_namespace_started_at", "job_usage", ["namespace", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_job_usage_namespace_started_at", "job_usage")
    op.drop_table("job_usage")
