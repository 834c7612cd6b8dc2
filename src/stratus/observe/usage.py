"""The usage meter: one record per invocation (from the dispatcher's outcomes, with tokens from
the OpenAI adapter) and the replicas kept up, written to the store in batches off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from stratus.control.controller import Controller
from stratus.cost import Prices, billed_memory_mb, gb_seconds
from stratus.dispatch.outcomes import Outcome
from stratus.dispatch.pool import ReplicaState, RevisionPool
from stratus.runtime.memory import read_peak_rss
from stratus.store.usage import WHOLE_DEPLOYMENT, CapacityMinute, UsageRecord, UsageStore

log = logging.getLogger("stratus.usage")

FLUSH_S = 1.0  # records wait at most this long (plus a write) before they are saved
FLUSH_AT = 500  # or until this many are buffered
SAMPLE_S = 0.25  # how often the replicas kept up are counted
TOKEN_WAIT_S = 2.0  # how long an OpenAI record waits for its tokens, or tokens for their record
MAX_BUFFERED = 100_000  # while the store is down, older records beyond this are dropped
MAX_STEP_S = 2.0  # a stalled loop does not stretch one sample over the stall

# (memory limit in MB or None, peak RSS in bytes or 0) of the replica an outcome names; with
# True, it may read /proc (off the request path) for a replica that has not reported yet.
MemoryLookup = Callable[[Outcome, bool], tuple[int | None, int]]
PoolLister = Callable[[], Iterable[RevisionPool]]
Writer = Callable[[list[UsageRecord], list[CapacityMinute]], Awaitable[None]]


class _Pending:
    """An outcome waiting to be written, and (for the OpenAI adapter's) its tokens."""

    __slots__ = ("limit_mb", "outcome", "peak_rss", "seen", "tokens")

    def __init__(self, outcome: Outcome, limit_mb: int | None, peak_rss: int, seen: float) -> None:
        self.outcome = outcome
        self.limit_mb = limit_mb
        self.peak_rss = peak_rss
        self.seen = seen  # monotonic
        self.tokens: tuple[int, int] | None = None


@dataclass
class _Cell:
    """One minute of one revision (or deployment) as the sampler adds it up."""

    observed_s: float = 0.0
    peak: int = 0
    replica_seconds: float = 0.0
    busy_seconds: float = 0.0

    def add(self, step: float, alive: int, ready: int, busy: int) -> None:
        self.observed_s += step
        self.peak = max(self.peak, ready)
        self.replica_seconds += alive * step
        self.busy_seconds += busy * step


@dataclass
class _Capacity:
    cells: dict[tuple[str, str, int, int], _Cell] = field(default_factory=dict)
    dirty: set[tuple[str, str, int, int]] = field(default_factory=set)

    def add(self, key: tuple[str, str, int, int], step: float, counts: tuple[int, int, int]) -> None:
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell()
        cell.add(step, *counts)
        self.dirty.add(key)


def _record(pending: _Pending) -> UsageRecord:
    outcome = pending.outcome
    duration = max(0.0, outcome.latency_s - outcome.queue_wait_s)
    billed = billed_memory_mb(pending.limit_mb, pending.peak_rss)
    prompt, completion = pending.tokens or (0, 0)
    assert outcome.replica_id is not None
    return UsageRecord(  # positional: keywords cost a fifth more per record
        outcome.namespace, outcome.deployment, outcome.revision, outcome.request_id,
        outcome.replica_id, outcome.protocol, outcome.status, outcome.shadow, outcome.cold_start,
        outcome.at - outcome.latency_s, duration, outcome.queue_wait_s, pending.limit_mb,
        pending.peak_rss, billed, gb_seconds(billed, duration), prompt, completion,
    )


class UsageMeter:
    """A dispatcher listener. ``observe`` and ``tokens`` only append to memory; a background
    task writes the buffer every ``flush_s`` (sooner past ``flush_at`` records) on a thread."""

    def __init__(self, store: UsageStore, memory: MemoryLookup, pools: PoolLister, *,
                 prices: Prices | None = None, flush_s: float = FLUSH_S,
                 flush_at: int = FLUSH_AT, sample_s: float = SAMPLE_S,
                 token_wait_s: float = TOKEN_WAIT_S, writer: Writer | None = None) -> None:
        self.store = store
        self._writer = writer  # None: the store's write, on a thread
        self.prices = prices or Prices()  # what the reports charge; the meter only measures
        self._memory = memory
        self._pools = pools
        self.flush_s = flush_s
        self.flush_at = flush_at
        self.sample_s = sample_s
        self.token_wait_s = token_wait_s
        self._buffer: list[_Pending] = []
        self._awaiting: dict[str, deque[_Pending]] = {}  # OpenAI records without their tokens
        self._early: dict[str, deque[tuple[int, int, float]]] = {}  # tokens without a record
        self._capacity = _Capacity()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one write at a time, in order
        self._tasks: list[asyncio.Task[None]] = []
        self._unsaved: list[UsageRecord] = []  # built, but their write failed
        self._unsaved_minutes: dict[tuple[str, str, int, int], CapacityMinute] = {}
        # Told of every batch before it is saved (e.g. Prometheus counters of GB-seconds).
        self.on_records: list[Callable[[list[UsageRecord]], None]] = []
        self.dropped = 0
        self.written = 0

    # -- request path: no I/O -----------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        if outcome.replica_id is None:
            return  # shed, timed out in the queue, or no replica came up: nothing ran
        limit_mb, peak_rss = self._memory(outcome, False)
        pending = _Pending(outcome, limit_mb, peak_rss, time.monotonic())
        if outcome.protocol == "openai" and not outcome.shadow:
            early = self._early.get(outcome.request_id)
            if early:
                prompt, completion, _ = early.popleft()
                pending.tokens = (prompt, completion)
                if not early:
                    del self._early[outcome.request_id]
            else:
                self._awaiting.setdefault(outcome.request_id, deque()).append(pending)
        self._buffer.append(pending)
        if len(self._buffer) >= self.flush_at:
            self._wake.set()

    def tokens(self, request_id: str, prompt: int, completion: int) -> None:
        """Tokens of one invocation of ``request_id``, before or after its outcome arrives. A
        request fanned out into several invocations calls this once for each."""
        waiting = self._awaiting.get(request_id)
        if waiting:
            waiting.popleft().tokens = (prompt, completion)
            if not waiting:
                del self._awaiting[request_id]
            return
        self._early.setdefault(request_id, deque()).append((prompt, completion, time.monotonic()))

    def sample(self, wall: float, step: float, now: float | None = None) -> None:
        """Add ``step`` seconds of the replicas up now to the current minute's cells; with
        ``now`` (monotonic), a pool created within the step is counted from its creation."""
        minute = int(wall // 60 * 60)
        totals: dict[tuple[str, str], list[int]] = {}
        steps: dict[tuple[str, str], float] = {}  # a deployment's: its oldest pool's
        for pool in self._pools():
            alive = busy = 0
            for replica in pool.replicas.values():
                if replica.state is not ReplicaState.STOPPED:
                    alive += 1
                    busy += replica.inflight > 0
            ready = len(pool.ready)
            own = step if now is None else min(step, max(0.0, now - pool.created))
            self._capacity.add((pool.namespace, pool.deployment, pool.revision, minute), own,
                               (alive, ready, busy))
            key = (pool.namespace, pool.deployment)
            total = totals.setdefault(key, [0, 0, 0])
            total[0] += alive
            total[1] += ready
            total[2] += busy
            steps[key] = max(steps.get(key, 0.0), own)
        for (namespace, deployment), (alive, ready, busy) in totals.items():
            self._capacity.add((namespace, deployment, WHOLE_DEPLOYMENT, minute),
                               steps[namespace, deployment], (alive, ready, busy))

    # -- batching ---------------------------------------------------------------------
    def take(self, now: float, everything: bool = False) -> tuple[list[UsageRecord], list[CapacityMinute]]:
        """Records ready to be written (all of them with ``everything``) and the capacity cells
        changed since the last take; what is taken leaves the buffer."""
        keep: list[_Pending] = []
        ready: list[_Pending] = []
        for pending in self._buffer:
            waiting = pending.tokens is None and pending.outcome.request_id in self._awaiting
            if waiting and not everything and now - pending.seen < self.token_wait_s:
                keep.append(pending)
                continue
            if waiting:
                self._forget(pending)
            if pending.peak_rss == 0:  # ran before its replica's first heartbeat
                pending.peak_rss = self._memory(pending.outcome, True)[1]
            ready.append(pending)
        self._buffer = keep
        for request_id in [r for r, early in self._early.items() if now - early[-1][2] > self.token_wait_s]:
            del self._early[request_id]  # their outcome never came (the client went away)
        records, self._unsaved = self._unsaved + [_record(p) for p in ready], []
        minutes, self._unsaved_minutes = {**self._unsaved_minutes, **self._take_capacity()}, {}
        return records, [minutes[key] for key in sorted(minutes)]

    def _forget(self, pending: _Pending) -> None:
        waiting = self._awaiting.get(pending.outcome.request_id)
        if waiting is not None:
            with contextlib.suppress(ValueError):
                waiting.remove(pending)
            if not waiting:
                del self._awaiting[pending.outcome.request_id]

    def _take_capacity(self) -> dict[tuple[str, str, int, int], CapacityMinute]:
        capacity = self._capacity
        taken = {key: CapacityMinute(*key, cell.observed_s, cell.peak, cell.replica_seconds,
                                     cell.busy_seconds)
                 for key in capacity.dirty for cell in [capacity.cells[key]]}
        capacity.dirty.clear()
        newest = max((key[3] for key in capacity.cells), default=0)
        for key in [key for key in capacity.cells if key[3] < newest]:
            del capacity.cells[key]  # a finished minute, already taken: it changes no more
        return taken

    async def flush(self, everything: bool = False) -> None:
        """Write what is ready. A failed write keeps it for the next try (a bounded number)."""
        async with self._lock:
            fresh = len(self._unsaved)  # those were told of already
            records, minutes = self.take(time.monotonic(), everything)
            if not records and not minutes:
                return
            for callback in self.on_records if len(records) > fresh else ():
                try:
                    callback(records[fresh:])
                except Exception:
                    log.exception("a usage callback failed")
            try:
                if self._writer is not None:
                    await self._writer(records, minutes)
                else:
                    await asyncio.to_thread(self.store.write, records, minutes)
            except Exception:
                log.exception("could not save %d usage records; will retry", len(records))
                overflow = len(records) - MAX_BUFFERED
                if overflow > 0:
                    self.dropped += overflow
                    records = records[overflow:]
                self._unsaved = records + self._unsaved
                self._unsaved_minutes = {**{(m.namespace, m.deployment, m.revision, m.minute): m
                                            for m in minutes}, **self._unsaved_minutes}
                return
            self.written += len(records)

    # -- background tasks ---------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sampling(), name="usage-sampler"),
                       asyncio.create_task(self._flushing(), name="usage-writer")]

    async def close(self) -> None:
        """Stop sampling and write everything left, tokens or not."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.flush(everything=True)

    async def _sampling(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.sample_s)
            now = time.monotonic()
            try:
                self.sample(time.time(), min(now - last, MAX_STEP_S), now)
            except Exception:
                log.exception("sampling the replicas failed")
            last = now

    async def _flushing(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            await self.flush()


def controller_meter(store: UsageStore, controller: Controller, prices: Prices,
                     writer: Writer | None = None) -> UsageMeter:
    """A meter that reads memory limits, replicas' peaks and pools from the controller."""

    def memory(outcome: Outcome, probe: bool) -> tuple[int | None, int]:
        unit = controller.units.get((outcome.namespace, outcome.deployment))
        live = unit.revisions.get(outcome.revision) if unit is not None else None
        if live is None:
            return None, 0
        replica = live.pool.replicas.get(outcome.replica_id or "")
        if replica is None:
            return live.runtime.memory_mb, 0
        peak = replica.channel.peak_rss if replica.channel is not None else 0
        if not peak and probe and replica.pid is not None:
            peak = read_peak_rss(replica.pid)
        return live.runtime.memory_mb, peak

    def pools() -> list[RevisionPool]:
        return [live.pool for unit in controller.units.values() for live in unit.revisions.values()]

    return UsageMeter(store, memory, pools, prices=prices, writer=writer)
