"""The triggers' repository on a real SQLite database, migrated as the server does: names kept
per namespace, the last tick only moving forward, subscriptions going with their topic, and a
source's password never shown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus.errors import Conflict, NotFound
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.triggers import TriggerStore, redacted


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TriggerStore]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield TriggerStore(engine)
    engine.dispose()


def test_schedules_are_per_namespace_and_their_last_tick_only_moves_forward(
        store: TriggerStore) -> None:
    made = store.add_schedule("a", "s", "* * * * *", "UTC", "d", "{}", "one", 10.0)
    store.add_schedule("b", "s", "0 * * * *", "UTC", "d", "{}", "all", 11.0)  # same name: fine
    with pytest.raises(Conflict):
        store.add_schedule("a", "s", "* * * * *", "UTC", "d", "{}", "one", 12.0)
    store.fired(made.id, 120.0)
    store.fired(made.id, 60.0)  # a late writer never moves it back
    assert store.schedule("a", "s").last_fired == 120.0
    assert store.schedule("b", "s").last_fired is None
    assert [s.namespace for s in store.schedules()] == ["a", "b"]
    store.delete_schedule("a", "s")
    with pytest.raises(NotFound):
        store.schedule("a", "s")
    with pytest.raises(NotFound):
        store.delete_schedule("a", "s")


def test_subscriptions_go_with_their_topic(store: TriggerStore) -> None:
    store.add_topic("a", "t", 1.0)
    store.add_subscription("a", "t", "x", "d", {"type": "k"}, 2.0)
    with pytest.raises(Conflict):
        store.add_subscription("a", "t", "x", "d", {}, 3.0)
    with pytest.raises(NotFound):
        store.add_subscription("b", "t", "x", "d", {}, 3.0)  # another namespace's topic
    assert store.topics("a")[0].subscriptions == 1
    store.delete_topic("a", "t")
    store.add_topic("a", "t", 4.0)
    assert store.subscriptions("a", "t") == []


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@cache:6380/1", "redis://:***@cache:6380/1"),
    ("rediss://user:hunter2@cache/0", "rediss://user:***@cache/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_a_source_url_is_shown_without_its_password(store: TriggerStore, url: str,
                                                    shown: str) -> None:
    assert redacted(url) == shown
    source = store.add_source("a", f"s{len(url)}", "redis-stream", {"url": url, "stream": "s"},
                              "d", 1.0)
    assert source.view()["url"] == shown and "hunter2" not in str(store.sources("a")[0].view())


def test_a_job_schedule_keeps_its_body_and_no_deployment(store: TriggerStore) -> None:
    body = '{"code": {"bundle": "' + "a" * 64 + '", "entrypoint": "train.py:train"}}'
    made = store.add_schedule("a", "nightly", "0 3 * * *", "UTC", None, None, "one", 10.0,
                              job=body)
    store.add_schedule("a", "invoke", "0 3 * * *", "UTC", "d", "{}", "one", 10.0)
    assert (made.target, made.deployment, made.payload, made.job) == ("job", None, None, body)
    found = {s.name: s for s in store.schedules("a")}
    assert found["nightly"] == made
    assert (found["invoke"].target, found["invoke"].job) == ("invocation", None)
    assert store.job_bodies() == [body]
