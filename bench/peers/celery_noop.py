"""Celery peer for ``bench/async.py``: a no-op task and one that returns ``time.time()`` at start.

Runs in ``bench/.venv-celery``. Redis is both the broker and the result backend, at
``BENCH_CELERY_REDIS`` (default ``redis://127.0.0.1:6379/13``). The worker is started by the
harness as ``celery -A celery_noop worker --pool prefork -c 1`` (or ``--pool solo``) with
everything else at Celery's defaults, as a Python team would run it.
"""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/13")

app = Celery("celery_noop", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,  # silences a deprecation warning, changes nothing
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


@app.task(name="bench.noop")
def noop(payload: dict[str, object] | None = None) -> dict[str, bool]:
    return {"ok": True}


@app.task(name="bench.started_at")
def started_at(payload: dict[str, object] | None = None) -> float:
    """The worker's wall clock when the task body starts (compared with the client's)."""
    return time.time()
