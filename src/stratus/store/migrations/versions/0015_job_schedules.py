"""Schedules that submit a training job: a target kind ("invocation", what every schedule made
before did, or "job") and the job's body; a job schedule has no deployment or payload.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop NOT NULL in place, so it copies the table (rows kept).
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False,
                                   server_default="invocation"))
        batch.add_column(sa.Column("job", sa.Text(), nullable=True))
        batch.alter_column("deployment", existing_type=sa.String(63), nullable=True)
        batch.alter_column("payload", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM schedules WHERE target = 'job'")
    with op.batch_alter_table("schedules") as batch:
        batch.alter_column("payload", existing_type=sa.Text(), nullable=False)
        batch.alter_column("deployment", existing_type=sa.String(63), nullable=False)
        batch.drop_column("job")
        batch.drop_column("target")
