"""The datasets' operations on the server: push a version (parse the uploaded files, record the
schema, rows and split), resolve a reference to the layout a job reads, show, preview and
delete. Previews are read from the sealed files when asked for: no row is kept in the database."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stratus.datasets import splits
from stratus.datasets.parse import read_all
from stratus.datasets.reader import check_split, open_split, take_rows
from stratus.datasets.refs import DatasetRef, check_format, check_name, check_path, check_version
from stratus.datasets.schema import PREVIEW_ROWS, describe, preview, public
from stratus.errors import BadRequest, NotFound
from stratus.spec import SHA256_PATTERN
from stratus.store.blobs import NamespaceBlobs
from stratus.store.datasets import DatasetStore, DatasetVersionRecord
from stratus.store.integrity import CorruptBlob


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0)


class DatasetPushRequest(BaseModel):
    """Body of ``POST /api/datasets/{name}/versions``: the files are uploaded first
    (``PUT /api/blobs/{sha256}``)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    format: str
    files: dict[str, FileEntry] = Field(min_length=1, max_length=10_000)
    split: dict[str, float] | None = None  # {"train": 0.8, "test": 0.2}
    seed: int = 0


def _requested_split(body: DatasetPushRequest) -> dict[str, Any] | None:
    if body.split is None:
        return None
    return {"seed": splits.check_seed(body.seed), "fractions": splits.check_fractions(body.split)}


class DatasetService:
    def __init__(self, store: DatasetStore, blobs: NamespaceBlobs) -> None:
        self.store = store
        self.blobs = blobs
        self.artifacts = blobs.artifacts

    # -- push ---------------------------------------------------------------------------
    def push(self, namespace: str, name: str,
             body: DatasetPushRequest) -> tuple[dict[str, Any], bool]:
        """(the version's view, whether it was created): pushing a version again with the
        same content answers the stored one; with other content, Conflict."""
        check_name(name)
        check_version(body.version)
        check_format(body.format)
        split = _requested_split(body)
        files = {check_path(relative): entry.model_dump() for relative, entry in body.files.items()}
        existing = self.store.find(namespace, name, body.version)
        if existing is not None:  # decided before parsing anything again
            record = self.store.repeated(existing, body.format, files, split)
            return self.preview(namespace, name, record.version), False
        ref = f"{name}@{body.version}"
        sources = [(relative, self._plaintext(namespace, ref, relative, files[relative]))
                   for relative in sorted(files)]
        table = read_all(sources, body.format)
        rows = table.num_rows
        recorded = splits.describe(rows, split["seed"], split["fractions"]) if split else None
        record = _record(namespace, name, body.version, body.format, files, describe(table), rows,
                         recorded)
        stored, created = self.store.create_version(record)
        shown = {"split": None, "rows": preview(table), "split_rows": rows}
        return self.view(stored, shown), created

    def _plaintext(self, namespace: str, ref: str, relative: str, entry: dict[str, Any]) -> Path:
        label = f"dataset {ref} ({relative})"
        self.blobs.require(namespace, entry["sha256"], relative)  # 404: not the namespace's
        try:
            # Decrypting checks the blob too: each segment is authenticated under its digest.
            return self.artifacts.plain_blob(entry["sha256"], int(entry["size"]), label)
        except CorruptBlob as exc:
            raise BadRequest(exc.message) from None

    # -- what jobs read -----------------------------------------------------------------
    def find(self, namespace: str, ref: str) -> DatasetVersionRecord:
        parsed = DatasetRef.parse(ref)
        if parsed.version is None:
            record = self.store.latest(namespace, parsed.name)
        else:
            record = self.store.find(namespace, parsed.name, parsed.version)
            if record is None and self.store.latest(namespace, parsed.name) is not None:
                raise NotFound(f"dataset {parsed.name!r} has no version {parsed.version}")
        if record is None:
            raise NotFound(f"dataset {parsed.name!r} not found")
        return record

    def resolve(self, namespace: str, ref: str) -> dict[str, Any]:
        """The layout of a version (``iris@1``; ``iris``: the latest) that
        ``stratus.datasets.reader.open_split`` reads: JSON, with each file's plaintext path."""
        record = self.find(namespace, ref)
        files = {relative: {**entry, "path": str(self.artifacts.plain_blob(
                    entry["sha256"], int(entry["size"]), f"dataset {record.ref} ({relative})"))}
                 for relative, entry in record.files.items()}
        return {"ref": record.ref, "name": record.name, "version": record.version,
                "format": record.format, "files": files, "schema": record.schema,
                "rows": record.rows, "split": record.split}

    @staticmethod
    def check_split(layout: dict[str, Any], split: str | None) -> None:
        """NotFound when the version has no split of that name."""
        check_split(layout, split)

    # -- views ----------------------------------------------------------------------------
    def list_datasets(self, namespace: str) -> list[dict[str, Any]]:
        return [{"name": latest.name, "latest": latest.version, "versions": count,
                 "format": latest.format, "rows": latest.rows,
                 "columns": len(latest.schema["columns"]), "updated_at": latest.created_at}
                for latest, count in self.store.all_latest(namespace)]

    def show(self, namespace: str, name: str) -> dict[str, Any]:
        versions = self.store.versions(namespace, name)
        if not versions:
            raise NotFound(f"dataset {name!r} not found")
        return {"name": name, "latest": versions[-1].version,
                "versions": [record.summary() for record in versions]}

    @staticmethod
    def view(record: DatasetVersionRecord, shown: dict[str, Any]) -> dict[str, Any]:
        return {**record.summary(), "files": record.files, "schema": public(record.schema),
                "preview": shown}

    def preview(self, namespace: str, name: str, version: str,
                split: str | None = None) -> dict[str, Any]:
        """A version's view with its first rows, or with ``split``, that split's first rows."""
        record = self.find(namespace, f"{check_name(name)}@{check_version(version)}")
        layout = self.resolve(namespace, record.ref)
        chosen = open_split(layout, split)  # NotFound for a split the version lacks
        rows = (chosen.indices[:PREVIEW_ROWS] if chosen.indices is not None
                else np.arange(min(record.rows, PREVIEW_ROWS), dtype=np.int64))
        head = take_rows(layout, rows)
        shown = {"split": split, "rows": preview(head), "split_rows": chosen.num_rows}
        return self.view(record, shown)

    def delete(self, namespace: str, name: str, version: str | None) -> str:
        if version is None:
            self.store.delete_dataset(namespace, name)
            return name
        self.store.delete_version(namespace, name, version)
        return f"{name}@{version}"


def _record(namespace: str, name: str, version: str, format: str,
            files: dict[str, dict[str, Any]], schema: dict[str, Any], rows: int,
            split: dict[str, Any] | None) -> DatasetVersionRecord:
    return DatasetVersionRecord(
        namespace=namespace, name=name, version=version, format=format, files=files,
        size_bytes=sum(int(entry["size"]) for entry in files.values()), schema=schema, rows=rows,
        split=split, created_at=time.time())
