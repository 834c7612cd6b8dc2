"""Experiments over a deployment's revisions, with their conversion and request counts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("deployment", sa.String(63), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("control", sa.String(63), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=True),
        sa.Column("sticky", sa.JSON(), nullable=True),
        sa.Column("conversions", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("namespace", "name"),
    )
    op.create_index("ix_experiments_namespace", "experiments", ["namespace"])


def downgrade() -> None:
    op.drop_table("experiments")
