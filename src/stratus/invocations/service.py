"""The asynchronous invocation service: accepts work into the durable queue, drains it through
the dispatcher within each deployment's async share of slots, retries with backoff, dead-letters
what keeps failing, and hands finished invocations to their destinations and waiters."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from stratus.control.controller import Controller
from stratus.dispatch.dispatcher import Dispatcher
from stratus.errors import NotFound, QuotaFull, StratusError
from stratus.invocations.capacity import async_capacity, set_backlog
from stratus.invocations.destinations import Destinations
from stratus.invocations.invoker import invoke_json
from stratus.invocations.progress import ProgressWriter
from stratus.invocations.wakeup import Wakeup
from stratus.queue.base import InvocationQueue
from stratus.queue.records import AsyncInvocation, NewInvocation, Page, Status, body_digest
from stratus.queue.retry import RetryPolicy
from stratus.queue.shared import EXPIRED_ERROR
from stratus.resilience.priority import queue_priority_class
from stratus.spec import AsyncSpec

log = logging.getLogger("stratus.invocations")

LEASE_S = 15.0  # a dead server's claims go back to the queue this long after its last renewal
POLL_S = 0.5  # how often the queue is read while it holds work (the backlog the autoscaler sees)
# Reading an empty queue backs off to this: work enqueued here wakes the worker at once, so the
# gap only delays what another server sharing the queue enqueued, and spares an idle server.
IDLE_POLL_MAX_S = 5.0
MAINTENANCE_S = 10.0  # expiry of old queued work, purge of old records
RETENTION_S = 24 * 3600.0  # finished invocations (and their idempotency keys) are kept this long
DEAD_RETENTION_S = 14 * 86400.0  # dead letters, until redriven or this old


def new_id() -> str:
    return "inv-" + secrets.token_hex(12)


class AsyncService:
    def __init__(self, queue: InvocationQueue, dispatcher: Dispatcher, controller: Controller,
                 destinations: Destinations, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.queue = queue
        self.dispatcher = dispatcher
        self.controller = controller
        self.destinations = destinations
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = f"server-{secrets.token_hex(6)}"
        self.running: dict[str, asyncio.Task[None]] = {}  # id -> the attempt in flight
        self._inflight: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()  # deployments that may have work to claim
        self._wake = Wakeup()
        self._poll_at = 0.0  # monotonic: when the drain loop next reads the whole queue
        # Queued per namespace: as the latest read of the queue saw it, plus what was enqueued
        # here since; what the max_queued quota is checked against.
        self._queued: dict[str, int] = {}
        # Submissions checked against the quota whose enqueue has not returned yet: counted
        # as queued, or concurrent submissions would all pass a check made before any wrote.
        self._entering: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[AsyncInvocation]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        destinations.submit = self._submit_for_destination

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        await self.queue.open()
        recovered = await self.queue.recover(self.clock())
        if recovered:
            log.info("requeued %d async invocations whose server stopped mid-run", recovered)
        self._tasks = [asyncio.create_task(self._drain_loop(), name="async-drain"),
                       asyncio.create_task(self._lease_loop(), name="async-leases"),
                       asyncio.create_task(self._maintenance_loop(), name="async-maintenance")]

    async def close(self) -> None:
        """Stop claiming; attempts in flight are abandoned to their leases, so the next server
        (or this one restarted) runs them again."""
        self._closing = True
        for task in self._tasks + list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self.running.values(), return_exceptions=True)
        await self.destinations.close()
        await self.queue.close()

    # -- the API ------------------------------------------------------------------
    def settings_of(self, namespace: str, deployment: str) -> AsyncSpec:
        """The deployment's async settings; NotFound for an unknown deployment."""
        return self.controller.get_unit(namespace, deployment).scaling.async_invocations

    async def submit(self, namespace: str, deployment: str, payload: bytes, *, priority: int = 0,
                     source: dict[str, Any] | None = None, idempotency_key: str | None = None,
                     delay_s: float = 0.0,
                     pinned: int | None = None) -> tuple[AsyncInvocation, bool]:
        """Store one invocation (committed before this returns); with an idempotency key
        already used, the first invocation and False."""
        spec = self.settings_of(namespace, deployment)
        self._check_queue_quota(namespace)
        now = self.clock()
        new = NewInvocation(
            id=new_id(), namespace=namespace, deployment=deployment, payload=payload,
            max_attempts=spec.max_attempts, expires_at=now + spec.max_event_age_s,
            priority=priority, not_before=now + delay_s if delay_s > 0 else 0.0,
            idempotency_key=idempotency_key,
            digest=body_digest(namespace, deployment, payload) if idempotency_key else None,
            pinned_revision=pinned, source=source or {"kind": "api"})
        self._entering[namespace] = self._entering.get(namespace, 0) + 1
        try:
            record, created = await self.queue.enqueue(new, now)
        finally:
            self._entering[namespace] -= 1
        if created:
            self._queued[namespace] = self._queued.get(namespace, 0) + 1
            self._dirty.add((namespace, deployment))
            self._poll_within(POLL_S)
        return record, created

    def _check_queue_quota(self, namespace: str) -> None:
        limit = self.controller.caps.quotas.for_namespace(namespace).max_queued
        if limit and self._queued.get(namespace, 0) + self._entering.get(namespace, 0) >= limit:
            raise QuotaFull(f"namespace {namespace!r} has {limit} asynchronous invocations "
                            "queued, its quota (max_queued); retry once some have run",
                            retry_after=1.0)

    async def _submit_for_destination(self, namespace: str, deployment: str, payload: bytes,
                                      source: dict[str, Any], priority: int) -> AsyncInvocation:
        return (await self.submit(namespace, deployment, payload, priority=priority,
                                  source=source))[0]

    async def begin_sync(self, namespace: str, deployment: str, payload: bytes,
                         idempotency_key: str, timeout_s: float) -> tuple[AsyncInvocation, bool]:
        """Record a synchronous call made with an idempotency key, held by this server until
        ``end_sync``: no worker claims it, and a repeat finds it."""
        self.settings_of(namespace, deployment)
        now = self.clock()
        new = NewInvocation(
            id=new_id(), namespace=namespace, deployment=deployment, payload=payload,
            max_attempts=1, expires_at=now + RETENTION_S, idempotency_key=idempotency_key,
            digest=body_digest(namespace, deployment, payload), source={"kind": "sync"},
            running_owner=self.owner, lease_s=timeout_s + LEASE_S)
        return await self.queue.enqueue(new, now)

    async def end_sync(self, record: AsyncInvocation, result: bytes | None,
                       error: StratusError | None, revision: int | None) -> None:
        if error is None:
            await self.queue.finish(self.owner, record.id, Status.SUCCEEDED, self.clock(),
                                    result=result, revision=revision)
        else:
            await self.queue.finish(self.owner, record.id, Status.FAILED, self.clock(),
                                    error=_error_of(error), revision=error.revision)

    async def get(self, namespace: str, invocation_id: str) -> AsyncInvocation:
        record = await self.queue.get(namespace, invocation_id)
        if record is None:
            raise NotFound(f"invocation {invocation_id!r} not found")
        return record

    async def page(self, namespace: str, *, deployment: str | None = None,
                   status: Status | None = None, limit: int = 50,
                   cursor: str | None = None) -> Page:
        return await self.queue.page(namespace, deployment=deployment, status=status,
                                     limit=limit, cursor=cursor)

    async def cancel(self, namespace: str, invocation_id: str) -> AsyncInvocation:
        record = await self.queue.cancel(namespace, invocation_id, self.clock())
        if record is None:
            raise NotFound(f"invocation {invocation_id!r} not found")
        task = self.running.get(invocation_id)
        if task is not None and record.status is Status.CANCELLED:
            task.cancel()  # the dispatcher sends the replica a CANCEL for it
        self._notify(record)
        return record

    async def redrive(self, namespace: str, deployment: str,
                      ids: Sequence[str] | None) -> list[str]:
        spec = self.settings_of(namespace, deployment)
        now = self.clock()
        moved = await self.queue.redrive(namespace, deployment, ids, now,
                                         now + spec.max_event_age_s)
        if moved:
            self._dirty.add((namespace, deployment))
            self._wake.set()
        return moved

    async def wait(self, namespace: str, invocation_id: str, timeout_s: float) -> AsyncInvocation:
        """The invocation once it is terminal, or as it stands when ``timeout_s`` runs out.
        Finishing here wakes the waiter at once; one finished by another server is seen by
        polling."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.get(namespace, invocation_id)
            left = deadline - time.monotonic()
            if record.terminal or left <= 0:
                return record
            future: asyncio.Future[AsyncInvocation] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(invocation_id, []).append(future)
            try:
                return await asyncio.wait_for(future, min(left, 1.0))
            except TimeoutError:
                continue
            finally:
                waiting = self._waiters.get(invocation_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._waiters.pop(invocation_id, None)

    # -- draining -----------------------------------------------------------------
    async def _drain_loop(self) -> None:
        poll_s = POLL_S
        while not self._closing:
            await self._wake.sleep(self._poll_at - time.monotonic())
            try:
                if time.monotonic() >= self._poll_at:
                    pending = await self.queue.pending(self.clock())
                    set_backlog(self.dispatcher, pending)
                    self._queued = _by_namespace(pending)
                    self._dirty.update(pending)
                    busy = bool(pending or self.running)
                    poll_s = POLL_S if busy else min(IDLE_POLL_MAX_S, poll_s * 2)
                    self._poll_at = time.monotonic() + poll_s
                await self._claim_dirty()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the async worker failed to read the queue; retrying")
                await asyncio.sleep(POLL_S)

    def _poll_within(self, delay_s: float) -> None:
        """Read the queue again within ``delay_s`` (new work, a retry coming due)."""
        self._poll_at = min(self._poll_at, time.monotonic() + max(0.0, delay_s))
        self._wake.set()

    async def _claim_dirty(self) -> None:
        dirty = list(self._dirty)
        self.rng.shuffle(dirty)  # no namespace is always served first
        for key in dirty:
            namespace, deployment = key
            free = async_capacity(self.dispatcher, namespace, deployment,
                                  self._share(namespace, deployment)) - self._inflight.get(key, 0)
            if free <= 0:
                continue  # a finishing attempt marks it dirty again
            claimed = await self.queue.claim(self.owner, namespace, deployment, free,
                                             self.clock(), LEASE_S)
            if len(claimed) < free:
                self._dirty.discard(key)
            if claimed:
                self._queued[namespace] = max(0, self._queued.get(namespace, 0) - len(claimed))
            for record in claimed:
                self._inflight[key] = self._inflight.get(key, 0) + 1
                self.running[record.id] = asyncio.create_task(self._attempt(record))

    def _share(self, namespace: str, deployment: str) -> float:
        try:
            return self.settings_of(namespace, deployment).share
        except NotFound:
            return 1.0  # deleted: what is queued is claimed, and fails at once with a 404

    async def _attempt(self, record: AsyncInvocation) -> None:
        key = (record.namespace, record.deployment)
        try:
            finished = await self._run(record)
        finally:
            self.running.pop(record.id, None)
            self._inflight[key] -= 1
            if not self._inflight[key]:
                del self._inflight[key]
            self._dirty.add(key)
            self._wake.set()
        if finished is not None:
            self._notify(finished)
            if finished.terminal:
                await self.destinations.deliver(finished, self._spec_or_none(record))

    async def _run(self, record: AsyncInvocation) -> AsyncInvocation | None:
        if record.expires_at <= self.clock():  # claimed before the expiry sweep saw it
            return await self.queue.finish(self.owner, record.id, Status.DEAD, self.clock(),
                                           error=EXPIRED_ERROR)
        progress = ProgressWriter(self.queue, self.clock, record.id)
        try:
            # Shed as its submitter was entitled to: the integer kept at submit is already
            # within the key's ceiling, and its sign is the class, as on every route.
            answer, result = await invoke_json(
                self.dispatcher, record.namespace, record.deployment, record.payload, record.id,
                pinned=record.pinned_revision, on_progress=progress.report,
                priority=queue_priority_class(record.priority))
        except asyncio.CancelledError:
            raise
        except StratusError as exc:
            return await self._failed(record, exc)
        except Exception as exc:
            log.exception("async invocation %s failed in the server", record.id)
            return await self._failed(record, StratusError(f"internal error: {exc}"))
        finally:
            progress.close()
        spec = self._spec_or_none(record)
        if spec is not None and spec.on_success is not None:  # the destination takes the record
            return await self.queue.finish(self.owner, record.id, Status.SUCCEEDED,
                                           self.clock(), result=answer, revision=result.revision)
        # Mostly nobody needs the record back: the row is not read back for it.
        held = await self.queue.end(self.owner, record.id, Status.SUCCEEDED, self.clock(),
                                    result=answer, revision=result.revision)
        if held and record.id in self._waiters:  # a long poll came in meanwhile
            return await self.queue.get(record.namespace, record.id)
        return None

    async def _failed(self, record: AsyncInvocation, exc: StratusError) -> AsyncInvocation | None:
        spec = self._spec_or_none(record) or AsyncSpec(max_attempts=record.max_attempts)
        policy = RetryPolicy(record.max_attempts, spec.backoff_base_s, spec.backoff_cap_s)
        now = self.clock()
        error = _error_of(exc)
        at = policy.next_attempt_at(now, record.attempts, record.expires_at, exc.status,
                                    exc.type, self.rng)
        if at is not None:
            self._poll_within(at - now)
            return await self.queue.retry(self.owner, record.id, now, at, error, exc.revision)
        final = Status.DEAD if policy.retryable(exc.status, exc.type) else Status.FAILED
        return await self.queue.finish(self.owner, record.id, final, now, error=error,
                                       revision=exc.revision)

    def _spec_or_none(self, record: AsyncInvocation) -> AsyncSpec | None:
        try:
            return self.settings_of(record.namespace, record.deployment)
        except NotFound:
            return None

    def _notify(self, record: AsyncInvocation) -> None:
        if not record.terminal:
            return
        for future in self._waiters.pop(record.id, []):
            if not future.done():
                future.set_result(record)

    # -- housekeeping -------------------------------------------------------------
    async def _lease_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(LEASE_S / 3)
            if self.running:
                try:
                    await self.queue.renew(self.owner, list(self.running),
                                           self.clock() + LEASE_S)
                except Exception:
                    log.exception("renewing the async leases failed")

    async def _maintenance_loop(self) -> None:
        purged_at = 0.0
        while not self._closing:
            await asyncio.sleep(MAINTENANCE_S)
            try:
                now = self.clock()
                await self.queue.recover(now)  # claims of servers that died since
                for record in await self.queue.expire(now):
                    self._notify(record)
                    await self.destinations.deliver(record, self._spec_or_none(record))
                if now - purged_at > 3600:
                    purged_at = now
                    await self.queue.purge(now - RETENTION_S, now - DEAD_RETENTION_S)
            except Exception:
                log.exception("async queue maintenance failed")


def _by_namespace(pending: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (namespace, _), count in pending.items():
        totals[namespace] = totals.get(namespace, 0) + count
    return totals


def _error_of(exc: StratusError) -> dict[str, Any]:
    return {"type": exc.type, "message": exc.message, "status": exc.status}
