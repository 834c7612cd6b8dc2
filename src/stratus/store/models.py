"""The model registry's tables: models and their versions, with stages."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from stratus.errors import Conflict, NotFound
from stratus.store.tables import ModelRow, ModelVersionRow


@dataclass(frozen=True)
class ModelVersionRecord:
    """A stored model version; ``models.registry`` holds the rules about versions and stages."""

    namespace: str
    name: str
    version: str
    stage: str
    promoted_at: datetime
    format: str
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256": ..., "size": ...}
    size_bytes: int
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def digests(self) -> set[str]:
        return {entry["sha256"] for entry in self.files.values()}

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "stage": self.stage,
            "format": self.format, "files": self.files, "size_bytes": self.size_bytes,
            "promoted_at": self.promoted_at.isoformat(),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            **self.meta,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _record(namespace: str, name: str, row: ModelVersionRow) -> ModelVersionRecord:
    return ModelVersionRecord(
        namespace=namespace, name=name, version=row.version, stage=row.stage,
        promoted_at=row.promoted_at, format=row.format, files=dict(row.files),
        size_bytes=row.size_bytes, meta=dict(row.meta), created_at=row.created_at,
    )


class ModelStore:
    """Synchronous repository; callers run it off the event loop. Promoting a version into one
    of ``exclusive_stages`` archives the version that held it, in the same transaction."""

    def __init__(self, engine: Engine, *, exclusive_stages: Collection[str]) -> None:
        self._exclusive = frozenset(exclusive_stages)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _model(self, session: Session, namespace: str, name: str) -> ModelRow | None:
        query = select(ModelRow).where(ModelRow.namespace == namespace, ModelRow.name == name)
        return session.scalars(query).one_or_none()

    def create_version(self, namespace: str, name: str, version: str,
                       semver: tuple[int, int, int], format: str,
                       files: dict[str, dict[str, Any]], meta: dict[str, Any],
                       stage: str = "dev") -> ModelVersionRecord:
        """``semver`` is ``version`` parsed (``models.registry.parse_version``), for ordering."""
        major, minor, patch = semver
        now = _now()
        try:
            with self._sessions.begin() as session:
                model = self._model(session, namespace, name)
                if model is None:
                    model = ModelRow(namespace=namespace, name=name, created_at=now)
                    session.add(model)
                    session.flush()
                taken = select(ModelVersionRow.id).where(ModelVersionRow.model_id == model.id,
                                                         ModelVersionRow.version == version)
                if session.scalars(taken).first() is not None:
                    raise Conflict(f"model {name!r} already has version {version}; versions are "
                                   "immutable, push a new one")
                row = ModelVersionRow(
                    model_id=model.id, version=version, major=major, minor=minor, patch=patch,
                    stage="dev", promoted_at=now, format=format, files=files,
                    size_bytes=sum(int(entry["size"]) for entry in files.values()), meta=meta,
                    created_at=now,
                )
                session.add(row)
                session.flush()
                if stage != "dev":
                    self._set_stage(session, model, row, stage)
                return _record(namespace, name, row)
        except IntegrityError:
            raise Conflict(f"model {name!r} version {version} was pushed concurrently") from None

    def _set_stage(self, session: Session, model: ModelRow, row: ModelVersionRow, stage: str) -> None:
        if stage in self._exclusive:
            holders = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id,
                                                    ModelVersionRow.stage == stage,
                                                    ModelVersionRow.id != row.id)
            for holder in session.scalars(holders):
                holder.stage = "archived"
        row.stage = stage
        row.promoted_at = _now()

    def promote(self, namespace: str, name: str, version: str, stage: str) -> ModelVersionRecord:
        with self._sessions.begin() as session:
            model = self._model(session, namespace, name)
            row = self._version_row(session, model, name, version)
            assert model is not None
            self._set_stage(session, model, row, stage)
            session.flush()
            return _record(namespace, name, row)

    def add_evaluation(self, namespace: str, name: str, version: str,
                       evaluation: dict[str, Any]) -> ModelVersionRecord:
        """Record an evaluation on a version (its files and the rest stay as pushed); one per
        dataset version and split, the latest kept."""
        with self._sessions.begin() as session:
            row = self._version_row(session, self._model(session, namespace, name), name, version)
            kept = [e for e in (row.meta or {}).get("evaluations", [])
                    if (e.get("dataset"), e.get("split")) != (evaluation.get("dataset"),
                                                              evaluation.get("split"))]
            row.meta = {**(row.meta or {}), "evaluations": [*kept, evaluation]}
            session.flush()
            return _record(namespace, name, row)

    def _version_row(self, session: Session, model: ModelRow | None, name: str,
                     version: str) -> ModelVersionRow:
        if model is None:
            raise NotFound(f"model {name!r} not found")
        query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id,
                                              ModelVersionRow.version == version)
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return row

    def versions(self, namespace: str, name: str) -> list[ModelVersionRecord]:
        with self._sessions() as session:
            model = self._model(session, namespace, name)
            if model is None:
                return []
            query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id).order_by(
                ModelVersionRow.major, ModelVersionRow.minor, ModelVersionRow.patch)
            return [_record(namespace, name, row) for row in session.scalars(query)]

    def names(self, namespace: str) -> list[str]:
        with self._sessions() as session:
            query = select(ModelRow.name).where(ModelRow.namespace == namespace).order_by(ModelRow.name)
            return list(session.scalars(query))

    def delete_version(self, namespace: str, name: str, version: str) -> None:
        with self._sessions.begin() as session:
            model = self._model(session, namespace, name)
            row = self._version_row(session, model, name, version)
            session.delete(row)
            session.flush()
            assert model is not None
            remaining = select(ModelVersionRow.id).where(ModelVersionRow.model_id == model.id)
            if session.scalars(remaining).first() is None:
                session.delete(model)

    def delete_model(self, namespace: str, name: str) -> None:
        with self._sessions.begin() as session:
            model = self._model(session, namespace, name)
            if model is None:
                raise NotFound(f"model {name!r} not found")
            session.delete(model)

    def all_digests(self) -> set[str]:
        """Every blob any version of any namespace references (for garbage collection)."""
        with self._sessions() as session:
            digests: set[str] = set()
            for files in session.scalars(select(ModelVersionRow.files)):
                digests.update(entry["sha256"] for entry in files.values())
            return digests
