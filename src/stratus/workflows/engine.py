"""The executor: runs one execution's steps (tasks through the dispatcher, parallel branches, map
elements, choices), records each ended step, and replays recorded steps when it resumes."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from stratus.dispatch.dispatcher import Dispatcher
from stratus.errors import StratusError
from stratus.invocations.invoker import invoke_json
from stratus.workflows import refs
from stratus.workflows.history import dumps, loads
from stratus.workflows.language import Step, Workflow
from stratus.workflows.stepping import (
    Fail,
    Finish,
    Go,
    Outcome,
    choose,
    decide,
    failure,
    retry_delay,
    state_of,
    task_input,
    terminal,
)

log = logging.getLogger("stratus.workflows")
MAX_TRANSITIONS = 10_000  # per scope: a loop through a choice that never leaves ends here
MAX_ITEMS = 10_000  # per map: each element is a task and a history row
Record = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Live:
    """An execution this server is running: what it started with, the steps recorded before a
    restart (replayed, not re-run), and the steps in flight now (shown, never stored)."""

    id: str
    namespace: str
    workflow: Workflow
    input: Any
    created_at: float
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)  # rows stored by this run
    ended: dict[str, Any] | None = None  # once over: status, output, error, finished_at
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def deadline(self) -> float | None:
        """The execution's deadline on the loop's clock (its time limit counts from its
        creation, across restarts)."""
        if self.workflow.timeout_s is None:
            return None
        left = self.created_at + self.workflow.timeout_s - time.time()
        return asyncio.get_running_loop().time() + left


class _ScopeFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("scope failed")
        self.outcome = outcome


class Executor:
    def __init__(self, dispatcher: Dispatcher, record: Record,
                 rng: random.Random | None = None) -> None:
        self.dispatcher = dispatcher
        self.record = record
        self.rng = rng or random.Random()

    async def run(self, live: Live) -> tuple[str, Any, dict[str, Any] | None]:
        """(status, output, error) of the execution, once it ended."""
        context = refs.Context(live.input)
        try:
            async with asyncio.timeout_at(live.deadline()):
                outcome = await self.scope(live, live.workflow.steps, "", context, live.input)
        except TimeoutError:
            return "timed_out", None, {"type": "timeout", "message": "the execution ran past "
                                       f"its timeout_s of {live.workflow.timeout_s:g} s"}
        if outcome.ok:
            return "succeeded", outcome.output, None
        return "failed", None, outcome.error

    async def scope(self, live: Live, steps: tuple[Step, ...], prefix: str,
                    context: refs.Context, previous: Any) -> Outcome:
        """Runs a list of steps from its first, as links say, to its end."""
        step = steps[0]
        for visit in range(MAX_TRANSITIONS):
            key = f"{prefix}{visit}"
            recorded = live.done.get(key)
            if recorded is not None and recorded["step"] == step.id:
                outcome = _outcome_of(recorded)
                decision = decide(steps, step, outcome)
                if step.kind == "parallel":
                    _replay_branches(live, key, context)
            else:
                outcome, decision = await self._run_and_record(live, steps, step, key, context,
                                                               previous)
            if outcome.ok:
                context.steps[step.id] = outcome.output
                previous = outcome.output
            if isinstance(decision, Finish):
                return Outcome(True, decision.output)
            if isinstance(decision, Fail):
                return Outcome(False, error=decision.error)
            if decision.caught:
                context.error = {**(outcome.error or {}), "step": step.id}
            step = decision.step
        return failure("too_many_steps", f"a scope ran {MAX_TRANSITIONS} steps without ending")

    async def _run_and_record(self, live: Live, steps: tuple[Step, ...], step: Step, key: str,
                              context: refs.Context, previous: Any
                              ) -> tuple[Outcome, Go | Finish | Fail]:
        started = time.time()
        flight = live.running[key] = {"key": key, "step": step.id, "kind": step.kind,
                                      "state": "running", "attempts": 0, "started_at": started}
        try:
            outcome, given = await self.step(live, step, key, context, previous, flight)
        finally:
            live.running.pop(key, None)
        decision = decide(steps, step, outcome)
        row = {
            "execution_id": live.id, "key": key, "step": step.id, "kind": step.kind,
            "state": state_of(decision, outcome), "attempts": flight["attempts"],
            "input": given, "output": None if outcome.output is None else dumps(outcome.output),
            "error": None if outcome.error is None else dumps(outcome.error),
            "chosen": outcome.chosen, "started_at": started, "finished_at": time.time()}
        await self.record(row)
        live.recorded.append(row)
        return outcome, decision

    async def step(self, live: Live, step: Step, key: str, context: refs.Context,
                   previous: Any, flight: dict[str, Any]) -> tuple[Outcome, str | None]:
        """The step's outcome and its input as JSON text (None: it takes none)."""
        if step.kind == "task":
            return await self._task(live, step, key, context, flight)
        if step.kind == "choice":
            flight["attempts"] = 1
            return choose(step, context, previous), None
        if step.kind in ("succeed", "fail"):
            flight["attempts"] = 1
            return terminal(step, context, previous), None
        flight["attempts"] = 1
        try:
            async with asyncio.timeout(step.timeout_s):
                if step.kind == "parallel":
                    return await self._parallel(live, step, key, context, previous), None
                return await self._map(live, step, key, context)
        except TimeoutError:
            return failure("timeout", f"step {step.id!r} ran past its timeout_s of "
                           f"{step.timeout_s:g} s"), None

    async def _task(self, live: Live, step: Step, key: str, context: refs.Context,
                    flight: dict[str, Any]) -> tuple[Outcome, str | None]:
        try:
            payload = task_input(step, context)
        except refs.ReferenceFailed as exc:
            return failure("reference_error", str(exc)), None
        body = dumps(payload)
        flight["input"] = payload
        assert step.deployment is not None
        attempts = 0
        while True:
            attempts += 1
            flight["attempts"] = attempts
            try:
                async with asyncio.timeout(step.timeout_s):
                    answer, _ = await invoke_json(self.dispatcher, live.namespace, step.deployment,
                                                  body.encode(), f"wf-{live.id}-{key}-{attempts}")
                return Outcome(True, json.loads(answer) if answer.strip() else None), body
            except TimeoutError:
                status, error_type = 504, "timeout"
                message = f"the attempt ran past the step's timeout_s of {step.timeout_s:g} s"
            except StratusError as exc:
                status, error_type, message = exc.status, exc.type, exc.message
            except ValueError as exc:
                status, error_type, message = 502, "invalid_output", f"not JSON: {exc}"
            delay = retry_delay(step, attempts, status, error_type, self.rng)
            if delay is None:
                return failure(error_type, message, status=status), body
            await asyncio.sleep(delay)

    async def _parallel(self, live: Live, step: Step, key: str, context: refs.Context,
                        previous: Any) -> Outcome:
        async def branch(index: int, steps: tuple[Step, ...]) -> Any:
            outcome = await self.scope(live, steps, f"{key}/{index}/", context.child_for_branch(),
                                       previous)
            if not outcome.ok:
                raise _ScopeFailed(outcome)
            return outcome.output

        return await _together([branch(i, b) for i, b in enumerate(step.branches)])

    async def _map(self, live: Live, step: Step, key: str, context: refs.Context
                   ) -> tuple[Outcome, str | None]:
        assert step.items is not None and step.iterator is not None
        try:
            items = refs.resolve(step.items, context)
        except refs.ReferenceFailed as exc:
            return failure("reference_error", str(exc)), None
        if not isinstance(items, list):
            return failure("invalid_items", f"{step.items} is not a list"), None
        if len(items) > MAX_ITEMS:
            return failure("invalid_items", f"{step.items} holds {len(items)} elements; a map "
                           f"takes at most {MAX_ITEMS}"), None
        gate = asyncio.Semaphore(step.concurrency)
        iterator = (step.iterator,)

        async def element(index: int, item: Any) -> Any:
            async with gate:
                outcome = await self.scope(live, iterator, f"{key}/{index}/",
                                           context.child_for_item(item, index), item)
            if not outcome.ok:
                raise _ScopeFailed(Outcome(False, error={**(outcome.error or {}), "index": index}))
            return outcome.output

        return await _together([element(i, item) for i, item in enumerate(items)]), dumps(items)


async def _together(work: list[Awaitable[Any]]) -> Outcome:
    """Runs every branch at once; the first failure cancels the others and is the outcome."""
    failed: Outcome | None = None
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(w)) for w in work]
    except* _ScopeFailed as group_error:
        first = group_error.exceptions[0]
        assert isinstance(first, _ScopeFailed)
        failed = first.outcome
    if failed is not None:
        return failed
    return Outcome(True, [task.result() for task in tasks])


async def _awaited(work: Awaitable[Any]) -> Any:
    return await work


def _replay_branches(live: Live, key: str, context: refs.Context) -> None:
    """What a recorded parallel's branches ran, back in the table the steps after it read."""
    inner = [row for k, row in live.done.items() if k.startswith(f"{key}/")]
    for row in sorted(inner, key=lambda r: r["finished_at"]):
        if row["state"] == "succeeded":
            context.steps[row["step"]] = loads(row["output"])


def _outcome_of(row: dict[str, Any]) -> Outcome:
    return Outcome(row["state"] == "succeeded", loads(row["output"]), loads(row["error"]),
                   row["chosen"])
