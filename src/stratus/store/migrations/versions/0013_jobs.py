"""Jobs: the event log and the projections folded from it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.UniqueConstraint("job_id", "seq"),
    )
    op.create_table(
        "job_states",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("experiment", sa.String(63), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
    )
    op.create_index("ix_job_states_namespace_submitted", "job_states", ["namespace", "submitted_at"])
    op.create_index("ix_job_states_status", "job_states", ["status"])
    op.create_table(
        "job_metrics",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_metrics")
    op.drop_index("ix_job_states_status", "job_states")
    op.drop_index("ix_job_states_namespace_submitted", "job_states")
    op.drop_table("job_states")
    op.drop_table("job_events")
