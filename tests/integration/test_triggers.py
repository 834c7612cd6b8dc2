"""Triggers on a real server with real replicas and the real Redis: a seconds-field schedule that
fires on time, a topic fanning a CloudEvent out to the subscriptions its filters match, a Redis
Stream consumed, invoked and acknowledged (a dead consumer's entry taken over), the CLI, bad
input, roles and namespaces."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
import redis

from server import StratusServer, wait_for

REDIS_URL = "redis://127.0.0.1:6379/0"
TERMINAL = ("succeeded", "failed", "dead", "cancelled")
STRUCTURED = {"content-type": "application/cloudevents+json"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def invocations(http: httpx.Client, deployment: str) -> list[dict[str, Any]]:
    response = http.get("/api/invocations", params={"deployment": deployment, "limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["invocations"]
    return items


def finished(http: httpx.Client, invocation_id: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view: dict[str, Any] = http.get(f"/api/invocations/{invocation_id}").json()
        return view if view["status"] in TERMINAL else None

    return wait_for(check, timeout, f"invocation {invocation_id} to finish", interval=0.1)


@pytest.fixture(scope="module")
def echo(server: StratusServer) -> str:
    server.deploy("basic", "app:Echo", name="trig-echo", min_replicas=1, ready=1)
    return "trig-echo"


def test_a_schedule_with_a_seconds_field_fires_on_time(server: StratusServer, echo: str) -> None:
    created = server.http.post("/api/schedules", json={
        "name": "every-2s", "cron": "* * * * * */2", "deployment": echo,
        "payload": {"job": "tick"}, "timezone": "Europe/Paris"})
    assert created.status_code == 201, created.text
    assert created.json()["next_fire"].endswith("Z")

    def fired() -> list[dict[str, Any]] | None:
        found = [view for view in invocations(server.http, echo)
                 if view["source"].get("schedule") == "every-2s"]
        return found if len(found) >= 3 else None

    views = sorted(wait_for(fired, 30, "three ticks"), key=lambda v: v["source"]["tick"])
    ticks = [datetime.fromisoformat(v["source"]["tick"]).timestamp() for v in views]
    assert all(tick % 2 == 0 for tick in ticks)  # whole even seconds, as the cron says
    assert [b - a for a, b in pairwise(ticks)] == [2.0] * (len(ticks) - 1)
    for view, tick in zip(views, ticks, strict=True):
        assert view["source"]["kind"] == "schedule"
        assert 0 <= view["created_at"] - tick < 0.5, "submitted within half a second of its tick"
        assert view["idempotency_key"] == f"schedule:every-2s:{int(tick)}"
        done = finished(server.http, view["id"])
        assert done["status"] == "succeeded" and done["result"]["echo"] == {"job": "tick"}
    shown = server.http.get("/api/schedules/every-2s").json()
    assert shown["last_fired"] >= ticks[-1] and shown["payload"] == {"job": "tick"}

    assert server.http.delete("/api/schedules/every-2s").json() == {"deleted": "every-2s"}
    time.sleep(0.3)  # a tick submitted as the delete landed
    count = len([v for v in invocations(server.http, echo)
                 if v["source"].get("schedule") == "every-2s"])
    time.sleep(2.5)
    assert len([v for v in invocations(server.http, echo)
                if v["source"].get("schedule") == "every-2s"]) == count, "fired after deletion"


def test_a_topic_fans_out_to_the_subscriptions_its_filters_match(server: StratusServer) -> None:
    for name in ("sub-a", "sub-b", "sub-c"):
        server.deploy("basic", "app:Echo", name=name)
    http = server.http
    assert http.post("/api/topics", json={"name": "orders"}).status_code == 201
    for name, filter in (("sub-a", {"type": "order.created"}),
                         ("sub-b", {"type": "order.created", "region": "eu"}),
                         ("sub-c", {"type": "stratus.publish"})):
        made = http.post("/api/topics/orders/subscriptions",
                         json={"deployment": name, "filter": filter})
        assert made.status_code == 201, made.text
    listed = http.get("/api/topics/orders/subscriptions").json()["subscriptions"]
    assert [s["name"] for s in listed] == ["sub-a", "sub-b", "sub-c"]

    event = {"specversion": "1.0", "id": f"ev-{uuid.uuid4().hex[:8]}", "source": "/shop",
             "type": "order.created", "region": "eu", "data": {"order": 7}}
    published = http.post("/api/topics/orders/publish", content=json.dumps(event),
                          headers=STRUCTURED)
    assert published.status_code == 202, published.text
    answer = published.json()
    assert answer["id"] == event["id"]
    by_subscription = {item["subscription"]: item["id"] for item in answer["invocations"]}
    assert set(by_subscription) == {"sub-a", "sub-b"}  # sub-c's filter excludes it
    for name, invocation_id in by_subscription.items():
        done = finished(http, invocation_id)
        assert done["status"] == "succeeded", done
        assert done["deployment"] == name and done["source"]["kind"] == "topic"
        received = done["result"]["echo"]  # the event in structured JSON
        assert received["id"] == event["id"] and received["data"] == {"order": 7}
        assert received["specversion"] == "1.0" and received["region"] == "eu"
    # The same event again (a publisher's retry) starts nothing new.
    again = http.post("/api/topics/orders/publish", content=json.dumps(event), headers=STRUCTURED)
    assert {i["id"] for i in again.json()["invocations"]} == set(by_subscription.values())

    # Binary mode: attributes in ce-* headers, the data as the body; region us: sub-a only.
    binary = http.post("/api/topics/orders/publish", content=b'{"order": 8}', headers={
        "ce-specversion": "1.0", "ce-id": "bin-1", "ce-source": "/shop",
        "ce-type": "order.created", "ce-region": "us", "content-type": "application/json"})
    assert binary.status_code == 202, binary.text
    assert [i["subscription"] for i in binary.json()["invocations"]] == ["sub-a"]
    done = finished(http, binary.json()["invocations"][0]["id"])
    assert done["result"]["echo"]["data"] == {"order": 8}
    # Plain JSON is wrapped into an event of type stratus.publish: sub-c only.
    plain = http.post("/api/topics/orders/publish", json={"hello": "world"})
    assert plain.status_code == 202, plain.text
    assert [i["subscription"] for i in plain.json()["invocations"]] == ["sub-c"]
    received = finished(http, plain.json()["invocations"][0]["id"])["result"]["echo"]
    assert received["source"] == "/stratus/topics/orders" and received["type"] == "stratus.publish"
    assert received["data"] == {"hello": "world"} and received["id"] == plain.json()["id"]

    # A subscriber whose deployment was deleted is skipped, and said to be.
    server.deploy("basic", "app:Echo", name="sub-gone")
    assert http.post("/api/topics/orders/subscriptions",
                     json={"deployment": "sub-gone", "filter": {"type": "gone"}}).status_code == 201
    server.delete("sub-gone")
    gone = http.post("/api/topics/orders/publish", content=b"{}", headers={
        "ce-specversion": "1.0", "ce-id": "gone-1", "ce-source": "/s", "ce-type": "gone"})
    assert gone.status_code == 202, gone.text
    assert gone.json()["invocations"] == []
    assert [s["subscription"] for s in gone.json()["skipped"]] == ["sub-gone"]
    assert http.delete("/api/topics/orders/subscriptions/sub-b").status_code == 200
    assert http.delete("/api/topics/orders").json() == {"deleted": "orders"}
    assert http.post("/api/topics/orders/publish", json={}).status_code == 404


@pytest.fixture
def stream() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"stratus-test-{uuid.uuid4().hex[:10]}"
    yield client, key
    client.delete(key)
    client.close()


def test_a_redis_stream_entry_is_invoked_then_acknowledged(
        server: StratusServer, echo: str, stream: tuple[redis.Redis, str]) -> None:
    client, key = stream
    # A consumer that read an entry, then died: the entry stays pending under its name.
    client.xgroup_create(key, "workers", id="$", mkstream=True)
    orphan = client.xadd(key, {"n": "0"})
    assert client.xreadgroup("workers", "dead-consumer", {key: ">"}, count=1)
    created = server.http.post("/api/sources", json={
        "name": "jobs", "kind": "redis-stream", "url": REDIS_URL, "stream": key,
        "group": "workers", "deployment": echo, "batch": 4, "claim_idle_s": 1})
    assert created.status_code == 201, created.text
    entries = [orphan, client.xadd(key, {"n": "1", "word": "hi"}), client.xadd(key, {"n": "2"})]

    def all_acked() -> bool:
        info = client.xinfo_groups(key)[0]
        return bool(info["pending"] == 0 and info["last-delivered-id"] == entries[-1])

    wait_for(all_acked, 60, "every entry acknowledged", interval=0.1)
    by_entry = {view["source"]["entry"]: view for view in invocations(server.http, echo)
                if view["source"].get("kind") == "stream" and view["source"]["stream"] == key}
    assert set(by_entry) == set(entries)
    for entry_id, view in by_entry.items():
        done = finished(server.http, view["id"])
        assert done["status"] == "succeeded"
        assert done["idempotency_key"] == f"stream:jobs:{entry_id}"
        assert done["result"]["echo"] == client.xrange(key, entry_id, entry_id)[0][1]
    assert by_entry[entries[1]]["source"]["source"] == "jobs"
    listed = server.http.get("/api/sources").json()["sources"]
    assert any(s["name"] == "jobs" and s["stream"] == key for s in listed)
    assert server.http.delete("/api/sources/jobs").json() == {"deleted": "jobs"}
    # Deleted, the source no longer consumes.
    later = client.xadd(key, {"n": "3"})
    time.sleep(1.5)
    assert client.xinfo_groups(key)[0]["last-delivered-id"] == entries[-1] != later


def test_bad_input_gets_clear_errors(server: StratusServer, echo: str) -> None:
    post = server.http.post
    base = {"name": "bad", "cron": "* * * * *", "deployment": echo}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/schedules", {**base, "cron": "61 * * * *"}, 400, "does not parse"),
        ("/api/schedules", {**base, "cron": "every day"}, 400, "does not parse"),
        ("/api/schedules", {**base, "timezone": "Mars/Olympus"}, 400, "time zone"),
        ("/api/schedules", {**base, "catch_up": "some"}, 400, "catch_up"),
        ("/api/schedules", {**base, "name": "Bad Name"}, 400, "schedule name"),
        ("/api/schedules", {**base, "deployment": "no-such-thing"}, 404, "no-such-thing"),
        ("/api/topics/no-topic/subscriptions", {"deployment": echo}, 404, "no-topic"),
        ("/api/sources", {"name": "s", "kind": "kafka", "url": REDIS_URL, "stream": "x",
                          "deployment": echo}, 400, "kind"),
        ("/api/sources", {"name": "s", "kind": "redis-stream", "url": "http://x", "stream": "x",
                          "deployment": echo}, 400, "redis://"),
        ("/api/sources", {"name": "s", "kind": "redis-stream", "url": "redis://127.0.0.1:1",
                          "stream": "x", "deployment": echo}, 400, "cannot create group"),
        ("/api/sources", {"name": "s", "kind": "redis-stream", "url": REDIS_URL,
                          "stream": "x", "deployment": "no-such-thing"}, 404, "no-such-thing"),
    ]
    for path, body, status, says in cases:
        response = post(path, json=body)
        assert response.status_code == status, (body, response.text)
        assert says in error_of(response)["message"], (body, response.text)

    assert post("/api/schedules", json={**base, "name": "dup"}).status_code == 201
    duplicate = post("/api/schedules", json={**base, "name": "dup"})
    assert duplicate.status_code == 409 and error_of(duplicate)["type"] == "conflict"
    assert server.http.delete("/api/schedules/dup").status_code == 200
    assert server.http.delete("/api/schedules/dup").status_code == 404

    assert post("/api/topics", json={"name": "strict"}).status_code == 201
    assert post("/api/topics", json={"name": "strict"}).status_code == 409
    bad_filter = post("/api/topics/strict/subscriptions",
                      json={"deployment": echo, "filter": {"Type": "x"}})
    assert bad_filter.status_code == 400 and "attribute name" in error_of(bad_filter)["message"]
    unknown = post("/api/topics/nowhere/publish", json={"a": 1})
    assert unknown.status_code == 404 and error_of(unknown)["type"] == "not_found"
    for body, says in ((b'{"specversion": "1.0", "source": "/s", "type": "t"}', "id"),
                       (b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", '
                        b'"time": "noon"}', "time"),
                       (b"[]", "JSON object")):
        malformed = post("/api/topics/strict/publish", content=body, headers=STRUCTURED)
        assert malformed.status_code == 400, malformed.text
        assert says in error_of(malformed)["message"] and "malformed CloudEvent" in \
            error_of(malformed)["message"]
    binary = post("/api/topics/strict/publish", content=b"{}", headers={"ce-id": "1"})
    assert binary.status_code == 400 and "ce-specversion" in error_of(binary)["message"]
    assert server.http.delete("/api/topics/strict").status_code == 200


def test_roles_and_namespaces(server: StratusServer, echo: str) -> None:
    invoker = server.client_as(server.mint_key("default", "invoker")[1])
    developer = server.client_as(server.mint_key("default", "developer")[1])
    other = server.client_as(server.mint_key("trig-other", "developer")[1])
    try:
        schedule = {"name": "owned", "cron": "0 0 1 1 *", "deployment": echo}
        for path, body in (("/api/schedules", schedule), ("/api/topics", {"name": "owned"})):
            refused = invoker.post(path, json=body)
            assert refused.status_code == 403 and error_of(refused)["type"] == "forbidden"
            assert developer.post(path, json=body).status_code == 201
        assert developer.get("/api/schedules/owned").status_code == 200
        assert invoker.get("/api/schedules/owned").status_code == 403  # an invoker only invokes
        assert invoker.post("/api/topics/owned/publish", json={"x": 1}).status_code == 202
        assert invoker.delete("/api/schedules/owned").status_code == 403

        # Another namespace sees none of it, and cannot touch it.
        assert other.get("/api/schedules").json() == {"schedules": []}
        for method, path in (("GET", "/api/schedules/owned"), ("DELETE", "/api/schedules/owned"),
                             ("POST", "/api/topics/owned/publish"),
                             ("GET", "/api/topics/owned/subscriptions"),
                             ("DELETE", "/api/topics/owned")):
            response = other.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)
        # Nor can it schedule a deployment of the namespace it does not belong to.
        mine = other.post("/api/schedules", json={**schedule, "name": "mine"})
        assert mine.status_code == 404 and echo in error_of(mine)["message"]
    finally:
        developer.delete("/api/schedules/owned")
        developer.delete("/api/topics/owned")
        for client in (invoker, developer, other):
            client.close()


def test_the_cli_manages_schedules_topics_and_sources(server: StratusServer, echo: str) -> None:
    server.cli("schedule", "create", "nightly", "--cron", "0 3 * * *", "--deployment", echo,
               "--payload", '{"mode": "full"}', "--timezone", "Europe/Paris",
               "--catch-up", "none")
    listed = json.loads(server.cli("schedule", "ls", "--json").stdout)
    nightly = next(s for s in listed if s["name"] == "nightly")
    assert nightly["payload"] == {"mode": "full"} and nightly["catch_up"] == "none"
    assert datetime.fromisoformat(nightly["next_fire"]).hour in (1, 2)  # 03:00 in Paris, in UTC
    refused = server.cli("schedule", "create", "x", "--cron", "nope", "--deployment", echo,
                         check=False)
    assert refused.returncode != 0 and "does not parse" in refused.stderr
    server.cli("schedule", "rm", "nightly")

    server.cli("topic", "create", "cli-topic")
    server.cli("topic", "subscribe", "cli-topic", echo, "--filter", "type=stratus.publish",
               "--name", "cli-sub")
    subscriptions = json.loads(server.cli("topic", "ls", "cli-topic", "--json").stdout)
    assert subscriptions[0]["filter"] == {"type": "stratus.publish"}
    answer = json.loads(server.cli("topic", "publish", "cli-topic", '{"k": 1}').stdout)
    assert answer["invocations"][0]["subscription"] == "cli-sub"
    assert finished(server.http, answer["invocations"][0]["id"])["result"]["echo"]["data"] == \
        {"k": 1}
    structured = json.dumps({"specversion": "1.0", "id": "cli-1", "source": "/cli",
                             "type": "stratus.publish", "data": {"k": 2}})
    sent = json.loads(server.cli("topic", "publish", "cli-topic", structured, "--event").stdout)
    assert sent["id"] == "cli-1" and len(sent["invocations"]) == 1
    assert any(t["name"] == "cli-topic" and t["subscriptions"] == 1
               for t in json.loads(server.cli("topic", "ls", "--json").stdout))
    server.cli("topic", "unsubscribe", "cli-topic", "cli-sub")
    server.cli("topic", "rm", "cli-topic")
    assert json.loads(server.cli("source", "ls", "--json").stdout) == []


def test_ticks_missed_while_down_run_at_start_up_by_the_catch_up_policy(
        fresh_server: StratusServer) -> None:
    server = fresh_server
    server.deploy("basic", "app:Echo", name="late-echo")
    # Two ticks, a second apart, some seconds ahead: the server is down when they come.
    first = time.time() + 6
    while int(first) % 60 > 57:  # both in one minute, so one expression names them
        first += 1
    moment = datetime.fromtimestamp(int(first), UTC)
    cron = (f"{moment.minute} {moment.hour} {moment.day} {moment.month} * "
            f"{moment.second},{moment.second + 1}")
    for policy in ("none", "one", "all"):
        made = server.http.post("/api/schedules", json={
            "name": f"catch-{policy}", "cron": cron, "deployment": "late-echo",
            "catch_up": policy, "payload": {"policy": policy}})
        assert made.status_code == 201, made.text
    server.stop()
    while time.time() < int(first) + 2.5:
        time.sleep(0.1)
    server.start()

    def fired() -> dict[str, list[str]] | None:
        found: dict[str, list[str]] = {"catch-none": [], "catch-one": [], "catch-all": []}
        for view in invocations(server.http, "late-echo"):
            found[view["source"]["schedule"]].append(view["source"]["tick"])
        return found if len(found["catch-all"]) == 2 and found["catch-one"] else None

    found = wait_for(fired, 30, "the missed ticks to run")
    time.sleep(1)  # nothing more comes
    assert fired() == found
    second = moment.replace(second=moment.second + 1).isoformat().replace("+00:00", "Z")
    assert found["catch-none"] == []
    assert found["catch-one"] == [second]  # once, as the latest
    assert sorted(found["catch-all"]) == [moment.isoformat().replace("+00:00", "Z"), second]
    for policy in ("none", "one", "all"):  # skipped or run, they are behind it
        shown = server.http.get(f"/api/schedules/catch-{policy}").json()
        assert shown["last_fired"] == int(first) + 1


def test_a_stream_entry_is_acknowledged_once_dead_but_not_after_bad_input(
        server: StratusServer, stream: tuple[redis.Redis, str]) -> None:
    client, key = stream
    server.deploy("triggers", "app.py:judge", name="judge", async_invocations={
        "max_attempts": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.2})
    created = server.http.post("/api/sources", json={
        "name": "judged", "kind": "redis-stream", "url": REDIS_URL, "stream": key,
        "deployment": "judge", "claim_idle_s": 600})
    assert created.status_code == 201, created.text
    assert created.json()["group"] == "stratus"
    entries = {verdict: client.xadd(key, {"verdict": verdict}) for verdict in ("ok", "raise", "bad")}

    def ended() -> dict[str, dict[str, Any]] | None:
        views = {view["source"]["entry"]: view for view in invocations(server.http, "judge")
                 if view["source"].get("stream") == key and view["status"] in TERMINAL}
        return views if len(views) == 3 else None

    views = wait_for(ended, 60, "the three invocations to end")
    assert views[entries["ok"]]["status"] == "succeeded"
    assert views[entries["raise"]]["status"] == "dead" and views[entries["raise"]]["attempts"] == 2
    assert views[entries["bad"]]["status"] == "failed" and views[entries["bad"]]["attempts"] == 1

    def settled() -> list[str] | None:
        pending = [entry["message_id"] for entry in
                   client.xpending_range(key, "stratus", min="-", max="+", count=10)]
        return pending if len(pending) == 1 else None

    # Acknowledged: the success, and the dead one (it is in the DLQ now); the bad input stays.
    assert wait_for(settled, 10, "the acknowledgements") == [entries["bad"]]
    dead = server.http.get("/api/deployments/judge/dlq").json()
    assert [item["id"] for item in dead["invocations"]] == [views[entries["raise"]]["id"]]
    assert server.http.delete("/api/sources/judged").status_code == 200


def test_an_async_outcome_sent_to_a_topic_reaches_its_subscribers(server: StratusServer) -> None:
    http = server.http
    assert http.post("/api/topics", json={"name": "outcomes"}).status_code == 201
    server.deploy("basic", "app:Echo", name="dest-sink")
    assert http.post("/api/topics/outcomes/subscriptions",
                     json={"deployment": "dest-sink"}).status_code == 201
    server.deploy("basic", "app:Echo", name="dest-src",
                  async_invocations={"on_success": {"topic": "outcomes"}})
    queued = http.post("/api/deployments/dest-src/invoke?mode=async", json={"x": 5})
    assert queued.status_code == 202, queued.text
    assert finished(http, queued.json()["id"])["status"] == "succeeded"

    def delivered() -> list[dict[str, Any]] | None:
        found = [v for v in invocations(http, "dest-sink") if v["source"].get("topic") == "outcomes"]
        return found or None

    view = finished(http, wait_for(delivered, 30, "the outcome on the topic")[0]["id"])
    event = view["result"]["echo"]  # the outcome, wrapped into a CloudEvent
    assert event["type"] == "stratus.publish" and event["source"] == "/stratus/topics/outcomes"
    assert event["data"]["id"] == queued.json()["id"] and event["data"]["status"] == "succeeded"
    assert http.delete("/api/topics/outcomes").status_code == 200
