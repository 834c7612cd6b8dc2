"""Workflow history in the metadata store, on SQLite and on PostgreSQL: definitions, executions
(paginated, filtered, kept apart by namespace), and step rows recorded once per key."""

from __future__ import annotations

import time

from sqlalchemy import Engine
from test_store import engine

from stratus.workflows.history import History, dumps, finish_work, loads, step_work

__all__ = ["engine"]  # the fixture: SQLite, then a fresh PostgreSQL database


def _execution(execution_id: str, namespace: str, workflow: str, at: float) -> dict[str, object]:
    return {"id": execution_id, "namespace": namespace, "workflow": workflow,
            "status": "running", "definition": "name: w\n", "input": dumps({"n": 1}),
            "output": None, "error": None, "created_at": at, "finished_at": None}


def _step(execution_id: str, key: str, state: str, at: float) -> dict[str, object]:
    return {"execution_id": execution_id, "key": key, "step": f"s{key}", "kind": "task",
            "state": state, "attempts": 1, "input": dumps({}), "output": dumps({"k": key}),
            "error": None, "chosen": None, "started_at": at, "finished_at": at + 0.5}


def test_definitions_are_created_replaced_listed_and_deleted(engine: Engine) -> None:
    history = History(engine)
    assert history.put_workflow("a", "w", "name: w\n", 10.0)["created"] is True
    replaced = history.put_workflow("a", "w", "name: w\n# v2\n", 20.0)
    assert replaced == {"name": "w", "created_at": 10.0, "updated_at": 20.0, "created": False}
    history.put_workflow("b", "w", "name: w\n", 30.0)
    row = history.get_workflow("a", "w")
    assert row is not None and row["definition"].endswith("# v2\n")
    assert [r["name"] for r in history.list_workflows("a")] == ["w"]
    assert history.delete_workflow("a", "w") and not history.delete_workflow("a", "w")
    assert history.get_workflow("a", "w") is None and history.get_workflow("b", "w") is not None


def test_executions_page_newest_first_and_end_once(engine: Engine) -> None:
    history = History(engine)
    for i in range(5):
        history.create_execution(_execution(f"e{i}", "a", "w" if i % 2 else "v", 100.0 + i))
    history.create_execution(_execution("other", "b", "w", 200.0))
    assert history.finish_execution("e1", "succeeded", dumps({"ok": 1}), None, 300.0)
    assert not history.finish_execution("e1", "cancelled", None, None, 301.0)  # already ended
    page = history.list_executions("a", None, None, 2, None)
    assert [r["id"] for r in page.items] == ["e4", "e3"] and page.next_cursor
    rest = history.list_executions("a", None, None, 10, page.next_cursor)
    assert [r["id"] for r in rest.items] == ["e2", "e1", "e0"] and rest.next_cursor is None
    assert [r["id"] for r in history.list_executions("a", "w", None, 10, None).items] == [
        "e3", "e1"]
    assert [r["id"] for r in history.list_executions("a", None, "succeeded", 10, None).items] == [
        "e1"]
    assert {r["id"] for r in history.running()} == {"e0", "e2", "e3", "e4", "other"}
    assert history.get_execution("b", "e1") is None  # another namespace's
    row = history.get_execution("a", "e1")
    assert row is not None and row["status"] == "succeeded" and loads(row["output"]) == {"ok": 1}


def test_a_step_row_recorded_again_is_replaced_not_doubled(engine: Engine) -> None:
    history = History(engine)
    history.create_execution(_execution("x", "a", "w", 1.0))
    history.add_step(_step("x", "0", "succeeded", 1.0))
    history.add_step(_step("x", "1/0/0", "failed", 2.0))
    history.add_step(_step("x", "1/0/0", "succeeded", 3.0))
    steps = history.steps("x")
    assert [(s["key"], s["state"]) for s in steps] == [("0", "succeeded"), ("1/0/0", "succeeded")]


def test_inline_writes_happen_on_a_free_sqlite_and_step_aside_otherwise(engine: Engine) -> None:
    history = History(engine)
    history.create_execution(_execution("z", "a", "w", 1.0))
    done, _ = history.inline(step_work(_step("z", "0", "succeeded", 1.0)))
    if engine.dialect.name != "sqlite":
        assert not done  # over the network: always the writer thread's
        return
    assert done
    # Another writer holds the lock: no waiting on the event loop, the writer's way instead.
    with engine.connect() as other:
        other.exec_driver_sql("BEGIN IMMEDIATE")
        started = time.perf_counter()
        done, _ = history.inline(step_work(_step("z", "1", "succeeded", 2.0)))
        assert not done and time.perf_counter() - started < 0.5
        other.rollback()
    assert not history.inline(step_work(_step("z", "0", "failed", 3.0)))[0]  # already there
    history.add_step(_step("z", "1", "succeeded", 2.0))
    assert [s["key"] for s in history.steps("z")] == ["0", "1"]
    done, ended = history.inline(finish_work("z", "succeeded", None, None, 4.0))
    assert done and ended is True
    history.close()
