"""Client side of the Celery peer: runs one measurement and prints it as one JSON line.

    bench/.venv-celery/bin/python bench/peers/celery_client.py throughput --n 5000 --concurrency 32
    ... latency --n 200 --gap 0.02 | first --timeout 120 | ping --timeout 60

Runs in ``bench/.venv-celery`` beside ``celery_noop.py`` (same app, same Redis db). The
harness (``bench/celery_target.py``) starts the worker; this process only submits and waits.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery_noop import app, noop, started_at

PAYLOAD = {"x": 1}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def ping(timeout: float) -> dict[str, Any]:
    """One no-op through the worker: proves it is consuming (used as the readiness check)."""
    began = time.time()
    noop.apply_async((PAYLOAD,)).get(timeout=timeout)
    return {"seconds": time.time() - began}


def first(timeout: float) -> dict[str, Any]:
    """Connect, say ``ready``, and on a line from stdin submit one task and wait for its result.

    The harness starts the worker between the two, so the client's own start-up (imports,
    the broker connection) is not counted in the worker's cold start."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    started_at.backend.client.ping()
    emit({"ready": True})
    sys.stdin.readline()
    submitted = time.time()
    result = started_at.apply_async((PAYLOAD,))
    handler_start = float(result.get(timeout=timeout))
    return {"submitted": submitted, "handler_start": handler_start, "done": time.time()}


def latency(n: int, gap_s: float, timeout: float) -> dict[str, Any]:
    """``n`` tasks one at a time on an idle worker: handler start minus the client's send time."""
    samples: list[dict[str, float]] = []
    for _ in range(n):
        time.sleep(gap_s)  # the worker is idle again before each send
        sent = time.time()
        result = started_at.apply_async((PAYLOAD,))
        handler_start = float(result.get(timeout=timeout))
        samples.append({"to_start": handler_start - sent, "to_result": time.time() - sent})
    return {"samples": samples}


def throughput(n: int, concurrency: int, timeout: float, poll_s: float) -> dict[str, Any]:
    """``n`` submissions from ``concurrency`` threads; then wait for every result."""
    app.conf.broker_pool_limit = concurrency  # one producer connection per thread, no queueing
    ping(timeout)  # connections and the task's code path are warm before the clock starts
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []

    def submit(_: int) -> None:
        try:
            task_id = noop.apply_async((PAYLOAD,)).id
        except Exception as exc:  # count, keep going: a failed send is a result too
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            ids.append(task_id)

    began = time.time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(submit, range(n)))
    accepted = time.time()
    done, failed = wait_for_results(ids, timeout, poll_s)
    finished = time.time()
    return {"n": n, "accepted": len(ids), "enqueue_s": accepted - began,
            "e2e_s": finished - began, "succeeded": done, "failed": failed,
            "errors": errors[:5], "error_count": len(errors)}


def wait_for_results(ids: list[str], timeout: float, poll_s: float) -> tuple[int, int]:
    """Poll the result backend's keys (Celery's own key names) until every task is final.

    One MGET per chunk per poll instead of ``AsyncResult.get()`` per task, so the client's
    cost of observing 5,000 results does not inflate the figure."""
    client = app.backend.client
    pending = list(ids)
    done = failed = 0
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ids)} tasks not finished after {timeout:g}s")
        still: list[str] = []
        for start in range(0, len(pending), 1000):
            chunk = pending[start : start + 1000]
            values = client.mget([app.backend.get_key_for_task(t) for t in chunk])
            for task_id, raw in zip(chunk, values, strict=True):
                status = json.loads(raw)["status"] if raw else None
                if status == "SUCCESS":
                    done += 1
                elif status in ("FAILURE", "REVOKED"):
                    failed += 1
                else:
                    still.append(task_id)
        pending = still
        if pending:
            time.sleep(poll_s)
    return done, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["ping", "first", "latency", "throughput"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--gap", type=float, default=0.02, help="idle seconds between latency samples")
    parser.add_argument("--poll", type=float, default=0.005, help="result poll interval, seconds")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.command == "ping":
        emit(ping(args.timeout))
    elif args.command == "first":
        emit(first(args.timeout))
    elif args.command == "latency":
        emit(latency(args.n, args.gap, args.timeout))
    else:
        emit(throughput(args.n, args.concurrency, args.timeout, args.poll))
    return 0


if __name__ == "__main__":
    sys.exit(main())
