"""Dynamic batching: ``@stratus.batch`` turns calls that carry one item each into one call with a
list. The rules live in ``batch_policy`` (pure); the batchers here do the waiting and counting."""

from __future__ import annotations

import asyncio
import bisect
import functools
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from stratus.sdk.batch_policy import BatchError, BatchPolicy, BatchSlots, Outcome, failed, split_results

__all__ = ["BatchError", "BatchPolicy", "BatchSizeHistogram", "batch", "take_batch_sizes"]

# Upper bounds of the batch-size histogram's buckets; +Inf follows.
BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


# -- batch-size counts ------------------------------------------------------------------------
class BatchSizeCounts:
    """Batch sizes run in this process since the last ``take``; the replica's heartbeat ships
    them to the server as ``{method: {size: count}}``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # sync batches finish on handler threads
        self._counts: dict[str, dict[int, int]] = {}

    def record(self, method: str, size: int) -> None:
        with self._lock:
            sizes = self._counts.setdefault(method, {})
            sizes[size] = sizes.get(size, 0) + 1

    def take(self) -> dict[str, dict[int, int]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts


_COUNTS = BatchSizeCounts()


def take_batch_sizes() -> dict[str, dict[int, int]]:
    """This process's batch sizes since the last call (the heartbeat's optional element)."""
    return _COUNTS.take()


@dataclass
class _Series:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: int = 0


class BatchSizeHistogram:
    """The server's running totals for one deployment, by method. Replicas run user code, so
    what they send is checked and bounded rather than trusted."""

    MAX_METHODS = 64
    MAX_NAME = 200

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    def merge(self, deltas: Any) -> None:
        if not isinstance(deltas, dict):
            return
        for method, sizes in deltas.items():
            if not isinstance(method, str) or len(method) > self.MAX_NAME or not isinstance(sizes, dict):
                continue
            series = self._series.get(method)
            if series is None:
                if len(self._series) >= self.MAX_METHODS:
                    continue
                series = self._series[method] = _Series()
            for size, count in sizes.items():
                if type(size) is int and type(count) is int and size >= 1 and count >= 1:
                    series.counts[bisect.bisect_left(BUCKETS, size)] += count
                    series.total += size * count

    def series(self) -> Iterator[tuple[str, list[int], int]]:
        """(method, cumulative counts for each bound in ``BUCKETS`` then +Inf, sum of sizes)."""
        for method, series in sorted(self._series.items()):
            cumulative, running = [], 0
            for count in series.counts:
                running += count
                cumulative.append(running)
            yield method, cumulative, series.total


# -- sync batcher: caller threads take turns running batches ------------------------------------
class _Slot:
    __slots__ = ("arrived", "done", "error", "result", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.arrived = time.monotonic()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class SyncBatcher:
    """Leader/follower: no thread of its own. A caller that finds a batch due runs it on its
    own thread (the replica's handler pool), then wakes the others to collect their results."""

    def __init__(self, function: Callable[[list[Any]], Any], policy: BatchPolicy, name: str,
                 max_concurrent_batches: int = 1) -> None:
        self._function = function
        self._policy = policy
        self._name = name
        self._slots = BatchSlots(max_concurrent_batches)
        self._cond = threading.Condition()
        self._queue: deque[_Slot] = deque()

    def submit(self, value: Any) -> Any:
        slot = _Slot(value)
        with self._cond:
            self._queue.append(slot)
            while not slot.done:
                batch, timeout = self._next_batch()
                if batch is None:
                    self._cond.wait(timeout)
                    continue
                self._cond.release()
                outcomes: list[Outcome] | None = None
                try:
                    outcomes = self._call([item.value for item in batch])
                finally:
                    self._cond.acquire()
                    if outcomes is None:  # never leave a caller waiting for a batch that died
                        outcomes = failed(BatchError(f"{self._name}: the batch did not finish"), len(batch))
                    for item, (result, error) in zip(batch, outcomes, strict=True):
                        item.result, item.error, item.done = result, error, True
                    self._slots.finish(time.monotonic())
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _next_batch(self) -> tuple[list[_Slot] | None, float | None]:
        """The batch to run now, or how long to wait (None: until notified). Lock held."""
        if not self._queue or not self._slots.available():
            return None, None  # a finishing batch notifies
        now = time.monotonic()
        start = self._slots.window_start(self._queue[0].arrived)
        size = self._policy.take(len(self._queue), now - start)
        if size == 0:
            return None, max(0.0, start + self._policy.max_wait_s - now)
        self._slots.start()
        return [self._queue.popleft() for _ in range(size)], None

    def _call(self, values: list[Any]) -> list[Outcome]:
        try:
            outcomes = split_results(self._function(values), len(values), self._name)
        except BaseException as exc:  # the callers re-raise it; this thread keeps serving
            outcomes = failed(exc, len(values))
        _COUNTS.record(self._name, len(values))
        return outcomes


# -- async batcher: batches run as tasks on the caller's event loop -------------------------------
class _AsyncSlot:
    __slots__ = ("arrived", "future", "value")

    def __init__(self, value: Any, future: asyncio.Future[Any]) -> None:
        self.value = value
        self.arrived = time.monotonic()
        self.future = future


class AsyncBatcher:
    """Each batch runs in a task of its own, so a caller that is cancelled (a request past
    its timeout) leaves the batch, and the callers sharing it, untouched."""

    def __init__(self, function: Callable[[list[Any]], Any], policy: BatchPolicy, name: str,
                 max_concurrent_batches: int = 1) -> None:
        self._function = function
        self._policy = policy
        self._name = name
        self._max_concurrent_batches = max_concurrent_batches
        self._slots = BatchSlots(max_concurrent_batches)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_AsyncSlot] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, value: Any) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        slot = _AsyncSlot(value, loop.create_future())
        self._queue.append(slot)
        self._schedule()
        try:
            return await slot.future
        except asyncio.CancelledError:
            if slot in self._queue:  # not taken yet: it must not count towards a batch
                self._queue.remove(slot)
            raise

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new loop (a test calling asyncio.run twice): what the old one held died with it.
        self._loop = loop
        self._queue.clear()
        self._slots = BatchSlots(self._max_concurrent_batches)
        self._timer = None
        self._tasks = set()

    def _schedule(self) -> None:
        assert self._loop is not None
        while self._queue and self._slots.available():
            start = self._slots.window_start(self._queue[0].arrived)
            size = self._policy.take(len(self._queue), time.monotonic() - start)
            if size == 0:
                self._arm(start + self._policy.max_wait_s)
                return
            batch = [self._queue.popleft() for _ in range(size)]
            self._slots.start()
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _arm(self, deadline: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # an earlier wake-up re-evaluates anyway
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._schedule()

    async def _run(self, batch: list[_AsyncSlot]) -> None:
        try:
            live = [slot for slot in batch if not slot.future.done()]
            if not live:
                return
            try:
                output = await self._function([slot.value for slot in live])
                outcomes = split_results(output, len(live), self._name)
            except asyncio.CancelledError:
                for slot in live:
                    slot.future.cancel()
                raise
            except BaseException as exc:
                outcomes = failed(exc, len(live))
            _COUNTS.record(self._name, len(live))
            for slot, (result, error) in zip(live, outcomes, strict=True):
                if slot.future.done():  # its caller was cancelled meanwhile
                    continue
                if error is None:
                    slot.future.set_result(result)
                else:
                    slot.future.set_exception(error)
        finally:
            self._slots.finish(time.monotonic())
            self._schedule()


# -- the decorator ------------------------------------------------------------------------------
Batcher = SyncBatcher | AsyncBatcher


class _Batchers:
    """One batcher per instance for a method (kept in the instance), one for a function."""

    def __init__(self, function: Callable[..., Any], policy: BatchPolicy,
                 max_concurrent_batches: int) -> None:
        self.function = function
        self.policy = policy
        self.name = function.__qualname__
        self.is_async = inspect.iscoroutinefunction(function)
        self.max_concurrent_batches = max_concurrent_batches
        self._key = f"__stratus_batcher_{function.__name__}"
        self._lock = threading.Lock()  # two first calls on two threads must share one batcher
        self._unbound: Batcher | None = None

    def _make(self, function: Callable[[list[Any]], Any]) -> Batcher:
        kind = AsyncBatcher if self.is_async else SyncBatcher
        return kind(function, self.policy, self.name, self.max_concurrent_batches)

    def for_call(self, args: tuple[Any, ...]) -> tuple[Batcher, Any]:
        if len(args) == 1:
            if self._unbound is None:
                with self._lock:
                    if self._unbound is None:
                        self._unbound = self._make(self.function)
            return self._unbound, args[0]
        if len(args) != 2:
            raise TypeError(f"{self.name} is batched: call it with one item, not {len(args)} arguments")
        owner, item = args
        try:
            attributes = vars(owner)
        except TypeError:
            raise TypeError(f"@stratus.batch on {self.name} needs instances with a __dict__") from None
        batcher: Batcher | None = attributes.get(self._key)
        if batcher is None:
            with self._lock:
                batcher = attributes.get(self._key)
                if batcher is None:
                    batcher = attributes[self._key] = self._make(functools.partial(self.function, owner))
        return batcher, item


def _wrap(function: Callable[..., Any], policy: BatchPolicy, max_concurrent_batches: int) -> Any:
    batchers = _Batchers(function, policy, max_concurrent_batches)
    if batchers.is_async:

        @functools.wraps(function)
        async def batched_async(*args: Any) -> Any:
            batcher, item = batchers.for_call(args)
            return await batcher.submit(item)

        wrapper: Any = batched_async
    else:

        @functools.wraps(function)
        def batched(*args: Any) -> Any:
            batcher, item = batchers.for_call(args)
            return batcher.submit(item)

        wrapper = batched
    wrapper.__stratus_batch__ = policy
    return wrapper


@overload
def batch(function: Callable[..., Any], /) -> Callable[..., Any]: ...


@overload
def batch(
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    preferred_batch_sizes: Iterable[int] | None = None,
    max_concurrent_batches: int = 1,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def batch(
    function: Callable[..., Any] | None = None,
    /,
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    preferred_batch_sizes: Iterable[int] | None = None,
    max_concurrent_batches: int = 1,
) -> Any:
    """Batch calls to a function or method that takes a list and returns a list of the same
    length. Callers pass one item and get its result back (or its error raised). A method
    that is ``async def`` batches on the event loop; a plain one on the calling threads."""
    policy = BatchPolicy(max_batch_size, max_wait_ms / 1000.0, tuple(preferred_batch_sizes or ()))
    BatchSlots(max_concurrent_batches)  # fail at decoration, not on the first call

    def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(target):
            raise TypeError(f"@stratus.batch decorates a function, not {type(target).__name__}")
        wrapped: Callable[..., Any] = _wrap(target, policy, max_concurrent_batches)
        return wrapped

    return decorate if function is None else decorate(function)
