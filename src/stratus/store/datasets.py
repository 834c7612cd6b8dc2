"""The datasets' repository: immutable versions per namespace and name, with the files (blobs),
the inferred schema, the row count and the split that the push recorded. No row of the data is
kept here: the data stays sealed in the artifact store. SQLAlchemy Core; synchronous, so callers
run it off the event loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from stratus.errors import Conflict, NotFound
from stratus.store.tables import Base

# Declared on the shared metadata, as migration 0012 creates it. ``id`` only grows: the latest
# version of a dataset is the one pushed last.
DATASET_VERSIONS = Table(
    "dataset_versions", Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(63), nullable=False),
    Column("name", String(63), nullable=False),
    Column("version", String(63), nullable=False),
    Column("format", String(16), nullable=False),
    Column("files", JSON, nullable=False),  # relative path -> {sha256, size}
    Column("size_bytes", BigInteger, nullable=False),
    Column("data_schema", JSON, nullable=False),  # {columns: [{name, type, nulls}], arrow}
    Column("row_count", BigInteger, nullable=False),
    Column("split", JSON, nullable=True),  # {seed, fractions, sizes}
    Column("created_at", Float, nullable=False),  # Unix seconds
    UniqueConstraint("namespace", "name", "version"),
    Index("ix_dataset_versions_namespace_name", "namespace", "name"),
    sqlite_autoincrement=True,  # a deleted version's id is never reused: "latest" stays latest
)


@dataclass(frozen=True)
class DatasetVersionRecord:
    namespace: str
    name: str
    version: str
    format: str
    files: dict[str, dict[str, Any]]
    size_bytes: int
    schema: dict[str, Any]
    rows: int
    split: dict[str, Any] | None
    created_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def digests(self) -> set[str]:
        return {entry["sha256"] for entry in self.files.values()}

    def same_content(self, format: str, files: dict[str, dict[str, Any]],
                     split: dict[str, Any] | None) -> bool:
        """Whether a push of these would be this version again, byte for byte."""
        def seeded(value: dict[str, Any] | None) -> Any:
            return None if value is None else (value["seed"], value["fractions"])
        return (self.format == format and self.files == files
                and seeded(self.split) == seeded(split))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "ref": self.ref,
                "format": self.format, "rows": self.rows,
                "columns": len(self.schema.get("columns", [])), "size_bytes": self.size_bytes,
                "split": self.split, "created_at": self.created_at}


def _record(row: RowMapping) -> DatasetVersionRecord:
    return DatasetVersionRecord(
        namespace=row["namespace"], name=row["name"], version=row["version"],
        format=row["format"], files=dict(row["files"]), size_bytes=int(row["size_bytes"]),
        schema=dict(row["data_schema"]), rows=int(row["row_count"]),
        split=dict(row["split"]) if row["split"] is not None else None,
        created_at=float(row["created_at"]),
    )


class DatasetStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_version(self, record: DatasetVersionRecord) -> tuple[DatasetVersionRecord, bool]:
        """Record a version; (the stored one, False) when the same content is already there
        under that version, Conflict when other content is."""
        existing = self.find(record.namespace, record.name, record.version)
        if existing is not None:
            return self.repeated(existing, record.format, record.files, record.split), False
        values = {"namespace": record.namespace, "name": record.name, "version": record.version,
                  "format": record.format, "files": record.files,
                  "size_bytes": record.size_bytes, "data_schema": record.schema,
                  "row_count": record.rows, "split": record.split,
                  "created_at": record.created_at}
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(DATASET_VERSIONS), values)
        except IntegrityError:  # pushed concurrently: the same content is still idempotent
            existing = self.find(record.namespace, record.name, record.version)
            if existing is None:
                raise
            return self.repeated(existing, record.format, record.files, record.split), False
        return record, True

    @staticmethod
    def repeated(existing: DatasetVersionRecord, format: str, files: dict[str, dict[str, Any]],
                 split: dict[str, Any] | None) -> DatasetVersionRecord:
        """The stored version, pushed again: itself when the content is the same, else Conflict."""
        if existing.same_content(format, files, split):
            return existing
        raise Conflict(f"dataset {existing.ref} already exists with other content; versions are "
                       "immutable, push a new one")

    def find(self, namespace: str, name: str, version: str) -> DatasetVersionRecord | None:
        t = DATASET_VERSIONS
        query = select(t).where(t.c.namespace == namespace, t.c.name == name,
                                t.c.version == version)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _record(row) if row is not None else None

    def versions(self, namespace: str, name: str) -> list[DatasetVersionRecord]:
        """Oldest first; the last is the latest."""
        t = DATASET_VERSIONS
        query = select(t).where(t.c.namespace == namespace, t.c.name == name).order_by(t.c.id)
        with self.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def latest(self, namespace: str, name: str) -> DatasetVersionRecord | None:
        t = DATASET_VERSIONS
        query = (select(t).where(t.c.namespace == namespace, t.c.name == name)
                 .order_by(t.c.id.desc()).limit(1))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _record(row) if row is not None else None

    def all_latest(self, namespace: str) -> list[tuple[DatasetVersionRecord, int]]:
        """Each dataset of the namespace as (its latest version, how many versions it has)."""
        t = DATASET_VERSIONS
        query = select(t).where(t.c.namespace == namespace).order_by(t.c.name, t.c.id)
        latest: dict[str, DatasetVersionRecord] = {}
        counts: dict[str, int] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query).mappings():
                latest[row["name"]] = _record(row)
                counts[row["name"]] = counts.get(row["name"], 0) + 1
        return [(latest[name], counts[name]) for name in sorted(latest)]

    def delete_version(self, namespace: str, name: str, version: str) -> None:
        t = DATASET_VERSIONS
        with self.engine.begin() as connection:
            gone = connection.execute(delete(t).where(
                t.c.namespace == namespace, t.c.name == name, t.c.version == version))
        if not gone.rowcount:
            if self.latest(namespace, name) is None:
                raise NotFound(f"dataset {name!r} not found")
            raise NotFound(f"dataset {name!r} has no version {version}")

    def delete_dataset(self, namespace: str, name: str) -> int:
        """How many versions went; NotFound when there were none."""
        t = DATASET_VERSIONS
        with self.engine.begin() as connection:
            gone = connection.execute(delete(t).where(t.c.namespace == namespace, t.c.name == name))
        if not gone.rowcount:
            raise NotFound(f"dataset {name!r} not found")
        return int(gone.rowcount)

    def all_digests(self) -> set[str]:
        """Every blob any version of any namespace references (for garbage collection)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(DATASET_VERSIONS.c.files)).scalars()
            return {entry["sha256"] for files in rows for entry in files.values()}
