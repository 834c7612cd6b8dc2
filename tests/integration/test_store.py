"""The metadata store on its embedded default (SQLite) and on PostgreSQL, over real connections."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text

from server import StratusServer
from stratus.errors import Conflict, NotFound
from stratus.resilience.priority import Priority
from stratus.security.keys import mint
from stratus.security.roles import Role
from stratus.spec import RuntimeSpec, ScalingSpec
from stratus.store.datasets import DatasetStore, DatasetVersionRecord
from stratus.store.db import MIGRATIONS, make_engine, migrate, sqlite_url
from stratus.store.keys import KeyStore
from stratus.store.metadata import MetadataStore, RevisionStatus
from stratus.store.triggers import TriggerStore

POSTGRES = os.environ.get("STRATUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


def _postgres_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    admin_url = POSTGRES.replace("postgresql+psycopg", "postgresql") + "/postgres"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {exc}")
    name = f"stratus_test_{os.getpid()}_{os.urandom(3).hex()}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url_iter: Iterator[str] = iter([sqlite_url(tmp_path)])
    else:
        url_iter = _postgres_database()
    url = next(url_iter)
    created = make_engine(url)
    migrate(created)
    migrate(created)  # idempotent at every start
    yield created
    created.dispose()
    for _ in url_iter:  # runs the database's clean-up
        pass


def _runtime(**changes: object) -> RuntimeSpec:
    return RuntimeSpec(bundle="a" * 64, entrypoint="app.py:Echo").model_copy(update=changes)


def test_revisions_are_numbered_and_created_only_on_change(engine: Engine) -> None:
    store = MetadataStore(engine)
    deployment, revision, created = store.apply("default", "echo", _runtime(), ScalingSpec(),
                                                {"kind": "class"})
    assert (revision.number, created, deployment.latest_revision) == (1, True, 1)
    _, same, created = store.apply("default", "echo", _runtime(), ScalingSpec(min_replicas=2), {})
    assert (same.number, created) == (1, False)
    assert store.get_deployment("default", "echo").scaling.min_replicas == 2  # type: ignore[union-attr]
    _, second, created = store.apply("default", "echo", _runtime(timeout_s=5), ScalingSpec(), {})
    assert (second.number, created) == (2, True)
    assert [r.number for r in store.list_revisions("default", "echo")] == [1, 2]
    store.set_serving("default", "echo", 2)
    assert store.get_deployment("default", "echo").serving_revision == 2  # type: ignore[union-attr]
    store.set_revision_status("default", "echo", 2, RevisionStatus.FAILED, "init failed")
    assert store.get_revision("default", "echo", 2).status == "failed"  # type: ignore[union-attr]
    assert store.get_revision("default", "echo", 1).runtime == _runtime()  # type: ignore[union-attr]


def test_namespaces_keep_names_apart_and_delete_cascades(engine: Engine) -> None:
    store = MetadataStore(engine)
    store.apply("team-a", "model", _runtime(), ScalingSpec(), {})
    store.apply("team-b", "model", _runtime(threads=2), ScalingSpec(), {})
    assert [d.name for d in store.list_deployments("team-a")] == ["model"]
    assert len(store.list_deployments()) == 2
    assert store.delete_deployment("team-a", "model")
    assert not store.delete_deployment("team-a", "model")
    assert store.list_revisions("team-a", "model") == []
    assert store.get_deployment("team-b", "model") is not None


def test_a_write_to_a_deployment_deleted_meanwhile_changes_nothing(engine: Engine) -> None:
    """The router's writes are queued: one may run just as ``rm`` deletes its deployment
    (the deletion lands before the write's own statement, here on another connection)."""
    store = MetadataStore(engine)
    store.apply("default", "gone", _runtime(), ScalingSpec(), {})
    store.apply("default", "kept", _runtime(), ScalingSpec(), {})
    deleted: list[bool] = []

    def delete_first(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE") and not deleted:
            deleted.append(MetadataStore(engine).delete_deployment("default", "gone"))

    event.listen(engine, "before_cursor_execute", delete_first)
    try:
        store.set_routing("default", "gone", {"stable": 1, "traffic": {"1": 100}})
    finally:
        event.remove(engine, "before_cursor_execute", delete_first)
    assert deleted == [True] and store.get_deployment("default", "gone") is None
    store.set_revision_status("default", "gone", 1, RevisionStatus.FAILED, "late")
    store.set_routing("default", "kept", {"stable": 1, "traffic": {"1": 100}})
    store.set_revision_status("default", "kept", 1, RevisionStatus.FAILED, "init failed")
    kept = store.get_deployment("default", "kept")
    assert kept is not None and (kept.routing["stable"], kept.serving_revision) == (1, 1)
    assert store.get_revision("default", "kept", 1).status == "failed"  # type: ignore[union-attr]


def test_server_on_postgres_keeps_deployments_across_a_restart(tmp_path: Path) -> None:
    for url in _postgres_database():
        server = StratusServer(tmp_path / "data", {"STRATUS_DATABASE_URL": url})
        server.start()
        try:
            server.deploy("basic", "app.py:Echo", name="pg-echo", min_replicas=1, ready=1)
            assert server.invoke("pg-echo", {"a": 1}).status_code == 200
            server.stop()
            server.start()
            view = server.wait_ready("pg-echo")
            assert view["revision"] == 1
            assert server.invoke("pg-echo", {"a": 2}).json()["echo"] == {"a": 2}
        finally:
            server.stop()


def _dataset(namespace: str, version: str, digest: str, created_at: float) -> DatasetVersionRecord:
    return DatasetVersionRecord(
        namespace=namespace, name="iris", version=version, format="csv",
        files={"iris.csv": {"sha256": digest, "size": 10}}, size_bytes=10,
        schema={"columns": [{"name": "x", "type": "double", "nulls": 0}], "arrow": "AA=="},
        rows=150, split={"seed": 7, "fractions": {"train": 0.8, "test": 0.2},
                         "sizes": {"test": 30, "train": 120}}, created_at=created_at)


def test_dataset_versions_are_immutable_namespaced_and_latest_last(engine: Engine) -> None:
    store = DatasetStore(engine)
    first, created = store.create_version(_dataset("a", "2", "ab" * 32, 1.0))
    assert created and store.find("a", "iris", "2") == first
    again, created = store.create_version(_dataset("a", "2", "ab" * 32, 2.0))
    assert not created and again == first, "the same content again is the stored version"
    with pytest.raises(Conflict, match="already exists with other content"):
        store.create_version(_dataset("a", "2", "cd" * 32, 3.0))
    store.create_version(_dataset("a", "1", "cd" * 32, 4.0))
    store.create_version(_dataset("b", "9", "ef" * 32, 5.0))
    assert [r.version for r in store.versions("a", "iris")] == ["2", "1"]
    latest = store.latest("a", "iris")
    assert latest is not None and latest.version == "1", "the latest is the last pushed"
    assert latest.split == {"seed": 7, "fractions": {"train": 0.8, "test": 0.2},
                            "sizes": {"test": 30, "train": 120}}
    assert [(r.version, n) for r, n in store.all_latest("a")] == [("1", 2)]
    assert store.all_digests() == {"ab" * 32, "cd" * 32, "ef" * 32}
    store.delete_version("a", "iris", "1")
    latest = store.latest("a", "iris")
    assert latest is not None and latest.version == "2"
    with pytest.raises(NotFound, match="has no version 1"):
        store.delete_version("a", "iris", "1")
    assert store.delete_dataset("a", "iris") == 1
    with pytest.raises(NotFound, match="dataset 'iris' not found"):
        store.delete_dataset("a", "iris")
    assert store.all_digests() == {"ef" * 32} and store.find("b", "iris", "9") is not None


def _alembic(engine: Engine, step: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, step)(config, revision)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_schedules_made_before_job_schedules_still_invoke(backend: str, tmp_path: Path) -> None:
    urls: Iterator[str] = (iter([sqlite_url(tmp_path)]) if backend == "sqlite"
                           else _postgres_database())
    engine = make_engine(next(urls))
    try:
        _alembic(engine, "upgrade", "0014")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO schedules (namespace, name, cron, timezone, deployment, payload, "
                "catch_up, created_at, last_fired) VALUES ('a', 'old', '0 3 * * *', 'UTC', "
                "'echo', '{\"k\": 1}', 'all', 5.0, 60.0)"))
        migrate(engine)  # 0015: target and job, deployment and payload optional
        store = TriggerStore(engine)
        old = store.schedule("a", "old")
        assert (old.target, old.deployment, old.payload, old.job) == (
            "invocation", "echo", '{"k": 1}', None)
        assert (old.catch_up, old.created_at, old.last_fired) == ("all", 5.0, 60.0)
        with pytest.raises(Conflict):  # the (namespace, name) constraint survived the copy
            store.add_schedule("a", "old", "* * * * *", "UTC", None, None, "one", 9.0, job="{}")
        store.add_schedule("a", "train", "* * * * *", "UTC", None, None, "one", 9.0, job="{}")
        assert store.job_bodies() == ["{}"]
        _alembic(engine, "downgrade", "0014")  # job schedules go: they cannot be stated there
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, deployment FROM schedules")).all()
        assert [tuple(row) for row in rows] == [("old", "echo")]
    finally:
        engine.dispose()
        for _ in urls:  # drops the PostgreSQL database
            pass


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_keys_made_before_priorities_are_normal_and_new_ones_keep_theirs(
        backend: str, tmp_path: Path) -> None:
    urls: Iterator[str] = (iter([sqlite_url(tmp_path)]) if backend == "sqlite"
                           else _postgres_database())
    engine = make_engine(next(urls))
    try:
        _alembic(engine, "upgrade", "0016")
        old = mint("team-a", Role.INVOKER, created_by="bootstrap").record
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO api_keys (id, secret_hash, namespace, role, description, "
                "created_by, created_at) VALUES (:id, :hash, 'team-a', 'invoker', '', "
                "'bootstrap', :at)"), {"id": old.id, "hash": old.secret_hash, "at": old.created_at})
        migrate(engine)  # 0017: the priority column, NULL on the key above
        store = KeyStore(engine)
        low = mint("team-a", Role.INVOKER, created_by="bootstrap", priority=Priority.LOW).record
        critical = mint("team-a", Role.INVOKER, created_by="bootstrap",
                        priority=Priority.CRITICAL).record
        store.add(low)
        store.add(critical)
        assert {r.id: r.priority for r in store.all()} == {
            old.id: Priority.NORMAL, low.id: Priority.LOW, critical.id: Priority.CRITICAL}
        assert store.all()[1] == low
        _alembic(engine, "downgrade", "0016")  # the column goes; the keys stay
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT id FROM api_keys")).scalars().all()
        assert sorted(ids) == sorted([old.id, low.id, critical.id])
    finally:
        engine.dispose()
        for _ in urls:  # drops the PostgreSQL database
            pass
