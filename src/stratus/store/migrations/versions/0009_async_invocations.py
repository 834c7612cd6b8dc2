"""Asynchronous invocations: the durable queue of ``stratus.queue.sql``, with the indexes its
claim (per deployment, by priority then age), listing (newest first) and recovery (by lease)
read through.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLE = "async_invocations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("pinned_revision", sa.Integer(), nullable=True),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.UniqueConstraint("namespace", "idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_async_invocations_claim", TABLE,
                    ["namespace", "deployment", "status", sa.text("priority DESC"), "seq"])
    op.create_index("ix_async_invocations_listing", TABLE, ["namespace", "seq"])
    op.create_index("ix_async_invocations_lease", TABLE, ["status", "lease_until"])


def downgrade() -> None:
    op.drop_table(TABLE)
