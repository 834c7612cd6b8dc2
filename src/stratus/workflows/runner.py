"""The workflow service: deploys definitions, starts, waits for, cancels and shows executions,
and on start resumes those a stopped (or killed) server left running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from sqlalchemy import Engine

from stratus.control.controller import Controller
from stratus.dispatch.dispatcher import Dispatcher
from stratus.errors import BadRequest, Conflict, NotFound
from stratus.workflows.engine import Executor, Live
from stratus.workflows.history import (
    TERMINAL,
    ExecutionPage,
    History,
    Work,
    create_work,
    dumps,
    finish_work,
    loads,
    step_work,
)
from stratus.workflows.language import Workflow
from stratus.workflows.parse import parse_text
from stratus.workflows.views import execution_view, summary_view, workflow_view

log = logging.getLogger("stratus.workflows")
T = TypeVar("T")
MAX_INPUT_BYTES = 1024 * 1024


class WorkflowRunner:
    def __init__(self, engine: Engine, dispatcher: Dispatcher, controller: Controller) -> None:
        self.history = History(engine)
        self.controller = controller
        self.executor = Executor(dispatcher, self._record)
        self.live: dict[str, Live] = {}
        # One writer thread: step records commit in the order the steps ended, each in its own
        # short transaction, without queueing behind the default pool's other work.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="workflow-history")
        self._parsed: dict[str, Workflow] = {}  # definition text -> its parse
        # (namespace, name) -> definition text: every write goes through this runner, so a
        # start reads no row once the workflow is known.
        self._texts: dict[tuple[str, str], str] = {}
        self._closing = False
        self._queued = 0  # writes handed to the writer thread and not done yet

    async def _write(self, call: Callable[..., T], *args: Any) -> T:
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, call, *args)
        finally:
            self._queued -= 1

    async def _store(self, work: Work[T], call: Callable[..., T], *args: Any) -> T:
        """A hot-path write: inline when the store allows it and nothing is queued for the
        writer (so writes commit in the order they were made), else ``call`` on the writer."""
        if self._queued == 0:
            done, result = self.history.inline(work)
            if done:
                return cast(T, result)
        return await self._write(call, *args)

    async def _record(self, row: dict[str, Any]) -> None:
        await self._store(step_work(row), self.history.add_step, row)

    def _parse(self, text: str) -> Workflow:
        workflow = self._parsed.get(text)
        if workflow is None:
            if len(self._parsed) > 256:
                self._parsed.clear()
            workflow = self._parsed[text] = parse_text(text)
        return workflow

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Resumes the executions left running: their recorded steps are replayed, not re-run;
        a step that was in flight runs again."""
        for row in await self._write(self.history.running):
            try:
                workflow = self._parse(row["definition"])
            except BadRequest as exc:  # cannot happen to what was checked at deploy time
                await self._write(self.history.finish_execution, row["id"], "failed", None,
                                  dumps({"type": "invalid_workflow", "message": exc.message}),
                                  time.time())
                continue
            done = {step["key"]: step for step in await self._write(self.history.steps, row["id"])}
            live = Live(row["id"], row["namespace"], workflow, loads(row["input"]),
                        row["created_at"], done)
            log.info("resuming workflow execution %s of %s/%s (%d steps recorded)", live.id,
                     live.namespace, row["workflow"], len(done))
            self._launch(live)

    async def close(self) -> None:
        """Stops running executions where they are; they stay ``running`` in the store, and
        the next start resumes them."""
        self._closing = True
        tasks = [live.task for live in self.live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._write(self.history.close)
        self._writer.shutdown(wait=True)

    def _launch(self, live: Live) -> None:
        self.live[live.id] = live
        live.task = asyncio.get_running_loop().create_task(self._run(live),
                                                            name=f"workflow-{live.id}")

    async def _run(self, live: Live) -> None:
        try:
            status, output, error = await self.executor.run(live)
            result = None if output is None else dumps(output)
            failure = None if error is None else dumps(error)
            now = time.time()
            if await self._store(finish_work(live.id, status, result, failure, now),
                                 self.history.finish_execution, live.id, status, result,
                                 failure, now):
                live.ended = {"status": status, "output": result, "error": failure,
                              "finished_at": now}
        except asyncio.CancelledError:
            raise  # cancelled by a DELETE (already recorded) or by the server stopping
        except Exception:
            log.exception("workflow execution %s failed in the engine", live.id)
            with contextlib.suppress(Exception):
                await self._write(self.history.finish_execution, live.id, "failed", None,
                                  dumps({"type": "internal_error",
                                         "message": "the workflow engine failed"}), time.time())
        finally:
            self.live.pop(live.id, None)
            live.finished.set()

    # -- workflows ------------------------------------------------------------------------
    async def deploy(self, namespace: str, text: str) -> dict[str, Any]:
        workflow = parse_text(text)
        for deployment, step in workflow.deployments():
            try:
                self.controller.get_unit(namespace, deployment)
            except NotFound:
                raise NotFound(f"line {step.line}: step {step.id!r}: deployment {deployment!r} "
                               "not found") from None
        info = await self._write(self.history.put_workflow, namespace, workflow.name, text,
                                 time.time())
        self._texts[(namespace, workflow.name)] = text
        return {**info, "steps": len(workflow.steps)}

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.history.get_workflow, namespace, name)
        if row is None:
            raise NotFound(f"workflow {name!r} not found")
        return workflow_view(row, self._parse(row["definition"]))

    async def list_workflows(self, namespace: str) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self.history.list_workflows, namespace)
        return [workflow_view(row) for row in rows]

    async def delete_workflow(self, namespace: str, name: str) -> None:
        """Running executions go on with the definition they started with."""
        deleted = await self._write(self.history.delete_workflow, namespace, name)
        # After the write: a start that read the row before it (the writer runs in order) has
        # cached it by now.
        self._texts.pop((namespace, name), None)
        if not deleted:
            raise NotFound(f"workflow {name!r} not found")

    # -- executions -----------------------------------------------------------------------
    async def start_execution(self, namespace: str, name: str, payload: Any) -> Live:
        """Stored (committed) before it starts, so a crash right after still runs it."""
        if self._closing:
            raise BadRequest("the server is stopping")
        definition = self._texts.get((namespace, name))
        if definition is None:
            row = await self._write(self.history.get_workflow, namespace, name)
            if row is None:
                raise NotFound(f"workflow {name!r} not found")
            definition = self._texts[(namespace, name)] = row["definition"]
        workflow = self._parse(definition)
        text = dumps(payload)
        if len(text) > MAX_INPUT_BYTES:
            raise BadRequest(f"an execution's input holds at most {MAX_INPUT_BYTES} bytes")
        now = time.time()
        live = Live(uuid.uuid4().hex, namespace, workflow, payload, now)
        row = {"id": live.id, "namespace": namespace, "workflow": name, "status": "running",
               "definition": definition, "input": text, "output": None, "error": None,
               "created_at": now, "finished_at": None}
        created = asyncio.ensure_future(self._store(create_work(row),
                                                    self.history.create_execution, row))
        # The first step starts while the row commits: the writer runs in order, so no step's
        # row can land before it, and the caller hears of the execution only once it is stored.
        self._launch(live)
        try:
            await created
        except BaseException:
            assert live.task is not None
            live.task.cancel()
            raise
        return live

    async def wait(self, live: Live, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.finished.wait(), timeout_s)

    def ended_view(self, live: Live, workflow_name: str) -> dict[str, Any] | None:
        """An execution this runner ran to its end, shown from memory (what it stored), with no
        read: the answer of a start with ``?wait=true``."""
        if live.ended is None:
            return None
        row = {"id": live.id, "workflow": workflow_name, "input": dumps(live.input),
               "created_at": live.created_at, **live.ended}
        return execution_view(row, [*live.done.values(), *live.recorded], [], live.workflow)

    async def execution(self, namespace: str, execution_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.history.get_execution, namespace, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        steps = await asyncio.to_thread(self.history.steps, execution_id)
        live = self.live.get(execution_id)
        running = [dict(step) for step in live.running.values()] if live is not None else []
        try:
            workflow: Workflow | None = self._parse(row["definition"])
        except BadRequest:
            workflow = None
        return execution_view(row, steps, running, workflow)

    async def executions(self, namespace: str, workflow: str | None, status: str | None,
                         limit: int, cursor: str | None) -> dict[str, Any]:
        try:
            page: ExecutionPage = await asyncio.to_thread(
                self.history.list_executions, namespace, workflow, status, limit, cursor)
        except ValueError:
            raise BadRequest("cursor: give back a next_cursor this route returned") from None
        return {"executions": [summary_view(row) for row in page.items],
                "next_cursor": page.next_cursor}

    async def cancel(self, namespace: str, execution_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.history.get_execution, namespace, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        if row["status"] in TERMINAL:
            raise Conflict(f"execution {execution_id!r} already ended ({row['status']})")
        await self._write(self.history.finish_execution, execution_id, "cancelled", None,
                          dumps({"type": "cancelled", "message": "cancelled by a DELETE"}),
                          time.time())
        live = self.live.get(execution_id)
        if live is not None and live.task is not None:
            live.task.cancel()  # its steps in flight get the dispatcher's CANCEL
            await asyncio.gather(live.task, return_exceptions=True)
        return await self.execution(namespace, execution_id)
