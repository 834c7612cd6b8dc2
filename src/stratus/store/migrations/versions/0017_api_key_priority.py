"""API keys get a priority: what their requests get under load shedding without an
``X-Stratus-Priority`` header, and the most they may ask for (``low``, ``normal`` or
``critical``). Nullable, so existing keys need no rewrite: NULL reads as ``normal``.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("priority", sa.String(16), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table, PostgreSQL alters it in place
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("priority")
