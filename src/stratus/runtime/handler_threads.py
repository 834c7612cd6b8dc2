"""The threads a replica runs sync handlers on: up to ``size``, started as requests need them.

``concurrent.futures.ThreadPoolExecutor`` does this job with a ``Future``, a work item, a
semaphore probe and a queue whose ``put`` takes a condition per call: 20 to 30 µs per call on
these machines, against under 1 µs here, and a no-op replica serves a request in about 100.
The replica never reads the futures (an answer leaves through the event loop), so this keeps
only what it uses: one C ``SimpleQueue`` and a count of idle threads.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable


class HandlerThreads:
    """Runs each submitted call on one of at most ``size`` daemon threads; a thread starts
    only when every started one is busy. Daemon threads: the replica leaves with ``os._exit``,
    and a handler that hangs must not keep the process alive."""

    def __init__(self, size: int, name: str = "handler") -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.size = size
        self.name = name
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # started threads waiting for a call, less the calls put for them

    def submit(self, call: Callable[[], None]) -> None:
        """Run ``call`` on a free thread. It should not raise: nobody waits for its result, so
        an exception is only printed (to the replica's captured stderr)."""
        self._calls.put(call)
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # one waiting thread takes it
                return
            if len(self._threads) >= self.size:
                return  # every thread is busy: the call waits for the first one free
            thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
        thread.start()

    def threads(self) -> int:
        """How many threads have been started."""
        return len(self._threads)

    def stop(self) -> None:
        """Let every thread end once the calls already submitted have run."""
        for _ in self._threads:
            self._calls.put(None)

    def _work(self) -> None:
        calls = self._calls
        while True:
            call = calls.get()
            if call is None:
                return
            try:
                call()
            except BaseException:  # a bug of the caller's: said, and the thread lives on
                traceback.print_exc()
            with self._lock:
                self._idle += 1
