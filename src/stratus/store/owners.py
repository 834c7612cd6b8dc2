"""Which namespaces own each content-addressed blob: those that uploaded it, those the platform
wrote it for (a job's checkpoint or saved model) and those the global admin shared it with.
The bytes are stored once; ownership is what a namespace may see and reference. SQLAlchemy
Core; synchronous, so callers run it off the event loop."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Column, Engine, Float, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from stratus.store.tables import Base

# Declared on the shared metadata, as migration 0016 creates it (and back-fills it).
BLOB_OWNERS = Table(
    "blob_owners", Base.metadata,
    Column("digest", String(64), primary_key=True),
    Column("namespace", String(63), primary_key=True),
    Column("granted_at", Float, nullable=False),  # Unix seconds
)


class BlobOwners:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def owns(self, namespace: str, digest: str) -> bool:
        t = BLOB_OWNERS
        query = select(t.c.digest).where(t.c.digest == digest, t.c.namespace == namespace)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def grant(self, namespace: str, digest: str) -> bool:
        """Record that ``namespace`` owns ``digest``; False when it already did."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(BLOB_OWNERS).values(digest=digest, namespace=namespace,
                                                        granted_at=time.time()))
        except IntegrityError:  # owned already (perhaps granted a moment ago, concurrently)
            return False
        return True

    def owners(self, digest: str) -> list[str]:
        t = BLOB_OWNERS
        query = select(t.c.namespace).where(t.c.digest == digest).order_by(t.c.namespace)
        with self.engine.connect() as conn:
            return [str(namespace) for namespace in conn.scalars(query)]

    def granted_since(self, moment: float) -> set[str]:
        """Digests some namespace was given at or after ``moment`` (garbage collection keeps
        them for their grace period, as it keeps blobs written then)."""
        t = BLOB_OWNERS
        with self.engine.connect() as conn:
            return set(conn.scalars(select(t.c.digest).where(t.c.granted_at >= moment)))

    def forget(self, digests: Iterable[str], before: float) -> int:
        """Drop the ownership of blobs that were deleted, granted before ``before``: a grant
        made since (an upload that wrote the blob again) stays."""
        chosen = sorted(set(digests))
        removed = 0
        with self.engine.begin() as conn:
            for start in range(0, len(chosen), 500):  # bounded IN lists
                t = BLOB_OWNERS
                result = conn.execute(delete(t).where(t.c.digest.in_(chosen[start:start + 500]),
                                                      t.c.granted_at < before))
                removed += result.rowcount
        return removed
