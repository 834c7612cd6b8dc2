"""The load of ``bench/reliability.py``: the chaos tests' open-loop client (``tests/overload.py``
on ``tests/keepalive.py``, imported, not copied), a killer beside it, and each run's figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from common import REPO_ROOT

# After bench/ on the path: only ``overload`` and ``keepalive`` are taken from tests/.
sys.path.append(str(REPO_ROOT / "tests"))
from overload import Answer, drive, summarise


async def under_kills(url: str, key: str, path: str, victims: Callable[[], list[int]], *,
                      rate: float, seconds: float, every: float, payload: dict[str, Any],
                      seed: int) -> tuple[list[Answer], list[int]]:
    """``rate`` requests a second for ``seconds`` while, every ``every`` seconds, one of
    ``victims()`` (the ready replicas' pids) not killed yet is killed with SIGKILL, as
    ``tests/replica_kills.py`` does. Returns the answers and the pids killed."""
    killed: list[int] = []
    rng = random.Random(seed)

    async def killer() -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(every)
            if time.monotonic() - start >= seconds:
                return
            pids = [pid for pid in await asyncio.to_thread(victims) if pid not in killed]
            if pids:
                victim = rng.choice(pids)
                with contextlib.suppress(ProcessLookupError):  # died meanwhile: still counted
                    os.kill(victim, signal.SIGKILL)
                killed.append(victim)

    answers, _ = await asyncio.gather(
        drive(url, key, "", rate, seconds, payload, timeout_s=30.0, path=path), killer())
    return answers, killed


def open_loop(url: str, key: str, path: str, rate: float, seconds: float,
              payload: dict[str, Any], timeout_s: float = 60.0) -> list[Answer]:
    return asyncio.run(drive(url, key, "", rate, seconds, payload, timeout_s=timeout_s,
                             path=path))


def figures(answers: list[Answer], seconds: float) -> dict[str, Any]:
    """What a row reports: the overload tests' summary, and the statuses that were not 200
    (0: no HTTP answer, the connection failed or the client's timeout passed)."""
    summary = summarise(answers, seconds)
    failed = [a for a in answers if a.status != 200]
    return {
        "sent": summary.sent, "ok": summary.ok, "goodput": summary.goodput,
        "p50_ok_ms": _ms(summary.p50_ok_s), "p99_ok_ms": _ms(summary.p99_ok_s),
        "refused": summary.refused, "max_refusal_ms": _ms(summary.max_refusal_s),
        "failed": len(failed),
        "failed_by_status": {str(k): v for k, v in sorted(Counter(a.status for a in failed).items())},
        "max_failure_ms": _ms(max((a.latency_s for a in failed), default=None)),
        "retry_after": sorted({a.retry_after for a in failed if a.retry_after is not None}),
        "client_max_late_ms": _ms(summary.max_late_s),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class LoadAverage:
    """The 1-minute load average, sampled every 5 s while a run lasts: the machine's share
    that was not the run's shows in it (other builds on the same two cores)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

    @contextlib.contextmanager
    def sampling(self) -> Iterator[LoadAverage]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self._stop.wait(5.0):
                return

    def range(self) -> list[float]:
        return [min(self.samples), max(self.samples)] if self.samples else []
