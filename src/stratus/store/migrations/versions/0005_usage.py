"""Usage records (one per invocation) and per-minute replica capacity, for cost reports.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(160), nullable=False),
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("cold_start", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("queue_wait_s", sa.Float(), nullable=False),
        sa.Column("memory_limit_mb", sa.Integer(), nullable=True),
        sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=False),
        sa.Column("billed_memory_mb", sa.Integer(), nullable=False),
        sa.Column("gb_seconds", sa.Float(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
    )
    op.create_index("ix_usage_namespace_started_at", "usage", ["namespace", "started_at"])
    op.create_table(
        "usage_capacity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("observed_s", sa.Float(), nullable=False),
        sa.Column("peak_replicas", sa.Integer(), nullable=False),
        sa.Column("replica_seconds", sa.Float(), nullable=False),
        sa.Column("busy_replica_seconds", sa.Float(), nullable=False),
        sa.UniqueConstraint("namespace", "deployment", "revision", "minute"),
    )


def downgrade() -> None:
    op.drop_table("usage_capacity")
    op.drop_index("ix_usage_namespace_started_at", "usage")
    op.drop_table("usage")
