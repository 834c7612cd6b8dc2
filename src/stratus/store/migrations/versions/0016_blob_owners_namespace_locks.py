"""Blobs belong to namespaces: ``blob_owners`` records which namespaces may see and reference
each digest, given at once to every namespace that references it today (its model and dataset
versions, its revisions, its jobs' code, checkpoints and models, its job schedules), so an
upgrade breaks nobody. ``namespace_locks``: the row a namespace's deploys lock in turn, so
that a quota is checked and the deploy recorded in one serialised transaction.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_DIGEST = re.compile(r"[0-9a-f]{64}")
_JOB_EVENTS = ("JobSubmitted", "CheckpointSaved", "ModelSaved")


def upgrade() -> None:
    op.create_table(
        "blob_owners",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(63), primary_key=True),
        sa.Column("granted_at", sa.Float(), nullable=False),
    )
    op.create_table("namespace_locks", sa.Column("namespace", sa.String(63), primary_key=True))
    bind = op.get_bind()
    owned = sorted({(digest, namespace) for namespace, digest in _references(bind)
                    if isinstance(digest, str) and _DIGEST.fullmatch(digest)})
    if owned:
        now = time.time()
        table = sa.table("blob_owners", sa.column("digest"), sa.column("namespace"),
                         sa.column("granted_at"))
        bind.execute(table.insert(), [{"digest": digest, "namespace": namespace,
                                       "granted_at": now} for digest, namespace in owned])


def downgrade() -> None:
    op.drop_table("namespace_locks")
    op.drop_table("blob_owners")


def _json(value: Any) -> Any:
    """A JSON column's value: parsed already by PostgreSQL's driver, text from SQLite's."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _files(value: Any) -> Iterator[Any]:
    for entry in (_json(value) or {}).values():
        yield entry.get("sha256") if isinstance(entry, dict) else None


def _references(bind: sa.Connection) -> Iterator[tuple[str, Any]]:
    """(namespace, digest) of every blob a namespace's records name."""
    for namespace, files in bind.execute(sa.text(
            "SELECT m.namespace, v.files FROM model_versions v JOIN models m ON m.id = v.model_id")):
        for digest in _files(files):
            yield namespace, digest
    for namespace, files in bind.execute(sa.text("SELECT namespace, files FROM dataset_versions")):
        for digest in _files(files):
            yield namespace, digest
    for namespace, spec in bind.execute(sa.text(
            "SELECT d.namespace, r.spec FROM revisions r JOIN deployments d "
            "ON d.id = r.deployment_id")):
        yield namespace, (_json(spec) or {}).get("bundle")
    for namespace, kind, text in bind.execute(sa.text(
            "SELECT namespace, type, data FROM job_events WHERE type IN :kinds")
            .bindparams(sa.bindparam("kinds", expanding=True)), {"kinds": list(_JOB_EVENTS)}):
        data = json.loads(text)
        if kind == "JobSubmitted":
            yield namespace, ((data.get("spec") or {}).get("code") or {}).get("bundle")
        elif kind == "CheckpointSaved":
            yield namespace, data.get("digest")
        else:
            for digest in _files((data.get("model") or {}).get("files")):
                yield namespace, digest
    for namespace, job in bind.execute(sa.text(
            "SELECT namespace, job FROM schedules WHERE job IS NOT NULL")):
        yield namespace, ((json.loads(job) or {}).get("code") or {}).get("bundle")
