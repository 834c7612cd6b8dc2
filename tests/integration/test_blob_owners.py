"""Blob ownership in the metadata store, on SQLite and on PostgreSQL: migration 0016 gives each
existing blob to the namespaces whose records reference it (an upgrade breaks nobody), the
repository grants, answers and forgets, and a deploy's quota check is serialised per namespace."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from test_store import _alembic, _postgres_database

from stratus.errors import QuotaExceeded
from stratus.security.quotas import Footprint
from stratus.spec import RuntimeSpec, ScalingSpec
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.metadata import MetadataStore
from stratus.store.owners import BlobOwners


def digest(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture(params=["sqlite", "postgres"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no schema yet."""
    urls: Iterator[str] = (iter([sqlite_url(tmp_path)]) if request.param == "sqlite"
                           else _postgres_database())
    engine = make_engine(next(urls))
    yield engine
    engine.dispose()
    for _ in urls:  # drops the PostgreSQL database
        pass


def _insert(conn: object, sql: str, **values: object) -> None:
    conn.execute(text(sql), values)  # type: ignore[attr-defined]


def test_migration_gives_existing_blobs_to_the_namespaces_that_reference_them(
        empty: Engine) -> None:
    _alembic(empty, "upgrade", "0015")
    with empty.begin() as conn:
        _insert(conn, "INSERT INTO models (id, namespace, name, created_at) VALUES "
                      "(1, 'team-a', 'm', CURRENT_TIMESTAMP)")
        _insert(conn, "INSERT INTO model_versions (model_id, version, major, minor, patch, stage, "
                      "promoted_at, format, files, size_bytes, meta, created_at) VALUES "
                      "(1, '1.0.0', 1, 0, 0, 'dev', CURRENT_TIMESTAMP, 'safetensors', :files, 2, "
                      "'{}', CURRENT_TIMESTAMP)",
                files=json.dumps({"a.bin": {"sha256": digest(1), "size": 1},
                                  "b.bin": {"sha256": digest(2), "size": 1}}))
        _insert(conn, "INSERT INTO dataset_versions (namespace, name, version, format, files, "
                      "size_bytes, data_schema, row_count, created_at) VALUES ('team-b', 'd', "
                      "'1', 'csv', :files, 1, '{}', 1, 1.0)",
                files=json.dumps({"x.csv": {"sha256": digest(1), "size": 1}}))
        _insert(conn, "INSERT INTO deployments (id, namespace, name, latest_revision, scaling, "
                      "created_at, updated_at) VALUES (1, 'team-c', 'web', 2, '{}', "
                      "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        for number, spec in ((1, {"bundle": digest(3), "entrypoint": "a:b"}),
                             (2, {"bundle": "", "entrypoint": "stratus.llm.server:LLMServer"})):
            _insert(conn, "INSERT INTO revisions (deployment_id, number, spec, spec_digest, "
                          "code_meta, status, created_at) VALUES (1, :number, :spec, 'x', '{}', "
                          "'ready', CURRENT_TIMESTAMP)", number=number, spec=json.dumps(spec))
        for seq, (kind, data) in enumerate((
                ("JobSubmitted", {"spec": {"code": {"bundle": digest(4)}}}),
                ("CheckpointSaved", {"step": 1, "digest": digest(5), "size": 1}),
                ("ModelSaved", {"model": {"files": {"w": {"sha256": digest(6), "size": 1}}}}),
                ("EpochCompleted", {"epoch": 1, "digest": digest(9)})), start=1):
            _insert(conn, "INSERT INTO job_events (namespace, job_id, seq, type, at, data) "
                          "VALUES ('team-d', 'job-1', :seq, :kind, 1.0, :data)",
                    seq=seq, kind=kind, data=json.dumps(data))
        _insert(conn, "INSERT INTO schedules (namespace, name, cron, timezone, target, job, "
                      "catch_up, created_at) VALUES ('team-e', 'nightly', '0 3 * * *', 'UTC', "
                      "'job', :job, 'one', 1.0)",
                job=json.dumps({"code": {"bundle": digest(7), "entrypoint": "t:train"}}))
    migrate(empty)  # 0016
    with empty.connect() as conn:
        rows = conn.execute(text("SELECT digest, namespace FROM blob_owners "
                                 "ORDER BY digest, namespace")).all()
    assert [tuple(row) for row in rows] == [
        (digest(1), "team-a"), (digest(1), "team-b"), (digest(2), "team-a"),
        (digest(3), "team-c"), (digest(4), "team-d"), (digest(5), "team-d"),
        (digest(6), "team-d"), (digest(7), "team-e")]
    owners = BlobOwners(empty)
    assert owners.owns("team-b", digest(1)) and not owners.owns("team-b", digest(2))
    _alembic(empty, "downgrade", "0015")
    with empty.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar() == 1
    migrate(empty)  # and up again: an empty table is back-filled the same way
    assert BlobOwners(empty).owners(digest(1)) == ["team-a", "team-b"]


def test_owners_grant_answer_and_forget(empty: Engine) -> None:
    migrate(empty)
    owners = BlobOwners(empty)
    assert owners.grant("a", digest(1)) and not owners.grant("a", digest(1))
    assert owners.grant("b", digest(1)) and owners.grant("a", digest(2))
    assert owners.owns("a", digest(1)) and not owners.owns("c", digest(1))
    cut = time.time()
    assert owners.granted_since(cut) == set()
    time.sleep(0.01)
    assert owners.grant("c", digest(3)) and owners.granted_since(cut) == {digest(3)}
    # A blob deleted while a namespace was given it again: the later grant stays.
    assert owners.forget([digest(1), digest(3)], before=cut) == 2
    assert owners.owners(digest(1)) == [] and owners.owners(digest(3)) == ["c"]
    assert owners.owners(digest(2)) == ["a"]


def test_the_quota_check_sees_every_deploy_committed_before_it(empty: Engine) -> None:
    """Two stores (two servers on one database) record at once in a namespace with room for
    one deployment: the second to take the namespace's lock sees the first's deployment."""
    migrate(empty)
    stores = [MetadataStore(empty), MetadataStore(empty)]
    runtime = RuntimeSpec(bundle=digest(1), entrypoint="app:Echo")
    scaling = ScalingSpec(max_replicas=1)
    seen: list[list[str]] = []
    inside = threading.Barrier(2, timeout=10)

    def admit(recorded: list[Footprint]) -> None:
        seen.append(sorted(f.name for f in recorded))
        if len(seen) == 1:
            time.sleep(0.5)  # the other deploy asks meanwhile: it must wait for this one
        if sum(f.max_replicas for f in recorded) >= 1:
            raise QuotaExceeded("no room")

    def deploy(index: int) -> None:
        try:
            inside.wait()  # both ask at once
            stores[index].apply("ns", f"d{index}", runtime, scaling, {}, admit)
            results[index] = "recorded"
        except QuotaExceeded:
            results[index] = "refused"

    results: dict[int, str] = {}
    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == ["recorded", "refused"], results
    assert sorted(seen) == [[], [next(f"d{i}" for i, r in results.items() if r == "recorded")]]
    assert [d.name for d in stores[0].list_deployments("ns")] == [
        next(f"d{i}" for i, r in results.items() if r == "recorded")]
    stores[0].apply("other", "d0", runtime, scaling, {}, admit)  # another namespace: its own
