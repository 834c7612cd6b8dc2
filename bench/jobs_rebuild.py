"""bench/jobs.py's second figure: ``JobLog.rebuild()`` over a log of N events, on SQLite (the
default store) and PostgreSQL, with the append rate beside it.

The log is filled with plausible job histories (submitted, started, params, epochs with a
metric each, completed) written straight into its table in bulk, as ``JobLog.append`` would
have stored them; a first rebuild makes the projections. Then each timed rebuild drops and
folds them again, and a sample of jobs is checked against a fold of their own events. The
append rate is measured apart, through ``JobLog.append`` (one transaction per event).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from common import log
from stratus.jobs.fold import fold
from stratus.jobs.log import EVENTS, JobLog
from stratus.store.db import make_engine, migrate, sqlite_url

POSTGRES = os.environ.get("STRATUS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
NAMESPACE = "bench"
INSERT_BATCH = 5_000


def history(job_id: str, events_per_job: int, at: float, rng: random.Random) -> list[dict[str, Any]]:
    """One job's ``events_per_job`` events as rows of the log: 3 opening events, epochs (an
    EpochCompleted and a MetricLogged each), a step-less metric to pad, then JobCompleted."""
    epochs = max(1, (events_per_job - 4) // 2)
    spec = {"experiment": "bench", "params": {"lr": rng.random(), "epochs": epochs}}
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("JobSubmitted", {"spec": spec}), ("JobStarted", {"attempt": 1, "pid": 4242}),
        ("ParamsLogged", {"params": {"hidden": rng.randint(4, 64)}})]
    for epoch in range(1, epochs + 1):
        kinds.append(("EpochCompleted", {"epoch": epoch, "loss": 1.0 / epoch,
                                         "metrics": {"accuracy": rng.random()}}))
        kinds.append(("MetricLogged", {"name": "lr", "value": rng.random(), "step": epoch}))
    while len(kinds) < events_per_job - 1:
        kinds.append(("MetricLogged", {"name": "extra", "value": rng.random(), "step": None}))
    kinds.append(("JobCompleted", {"metrics": {"accuracy": rng.random()}}))
    return [{"namespace": NAMESPACE, "job_id": job_id, "seq": seq, "type": kind,
             "at": at + seq * 0.01, "data": json.dumps(data, separators=(",", ":"))}
            for seq, (kind, data) in enumerate(kinds, start=1)]


def fill(engine: Engine, jobs: int, events_per_job: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    ids: list[str] = []
    pending: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for index in range(jobs):
            ids.append(f"job-{index:016x}")
            pending += history(ids[-1], events_per_job, 1.8e9 + index, rng)
            if len(pending) >= INSERT_BATCH:
                conn.execute(insert(EVENTS), pending)
                pending = []
        if pending:
            conn.execute(insert(EVENTS), pending)
    return ids


def check_sample(job_log: JobLog, jobs: list[str], sample: int = 25) -> None:
    """The projection of some jobs equals a fold of their events (a rebuild that lost or
    mangled anything would differ)."""
    for job_id in random.Random(1).sample(jobs, min(sample, len(jobs))):
        events = job_log.events(NAMESPACE, job_id)
        if job_log.job(NAMESPACE, job_id) != fold(NAMESPACE, job_id, events):
            raise AssertionError(f"rebuilt projection of {job_id} differs from its fold")
        if job_log.curves(NAMESPACE, job_id) != job_log.curves_from_log(NAMESPACE, job_id):
            raise AssertionError(f"rebuilt curves of {job_id} differ from the log's")


def append_rate(job_log: JobLog, n: int, events_per_job: int) -> dict[str, float]:
    """Events appended one at a time through ``JobLog.append``, on top of the full log."""
    rng = random.Random(11)
    rows = []
    while len(rows) < n:
        rows += history(f"job-append-{len(rows):08x}", events_per_job, time.time(), rng)
    rows = rows[:n]
    started = time.perf_counter()
    for row in rows:
        job_log.append(NAMESPACE, row["job_id"], row["type"], json.loads(row["data"]), at=row["at"])
    took = time.perf_counter() - started
    return {"appends": n, "append_s": took, "append_ms_per_event": took / n * 1000,
            "appends_per_s": n / took}


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="stratus-bench-log-"))
        try:
            yield sqlite_url(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg

    admin = psycopg.connect(POSTGRES.replace("postgresql+psycopg", "postgresql") + "/postgres",
                            autocommit=True, connect_timeout=3)
    name = f"stratus_bench_{os.getpid()}_{os.urandom(3).hex()}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def bench_rebuild(backend: str, events: int, events_per_job: int, repeats: int,
                  append_n: int) -> dict[str, Any]:
    """``events`` is rounded up to whole jobs of ``events_per_job`` (at least 6) each."""
    if events_per_job < 6:
        raise ValueError("a job history here has at least 6 events")
    events = -(-events // events_per_job) * events_per_job
    with database(backend) as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            job_log = JobLog(engine)
            started = time.perf_counter()
            jobs = fill(engine, events // events_per_job, events_per_job)
            fill_s = time.perf_counter() - started
            log(f"rebuild/{backend}: {events:,} events of {len(jobs):,} jobs stored in {fill_s:.1f}s")
            assert job_log.rebuild() == events  # the projections the timed rebuilds replace
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                count = job_log.rebuild()
                timings.append(time.perf_counter() - started)
                log(f"rebuild/{backend}: {count:,} events folded in {timings[-1]:.2f}s")
            check_sample(job_log, jobs)
            appends = append_rate(job_log, append_n, events_per_job) if append_n else {}
        finally:
            engine.dispose()
    best = min(timings)
    return {"backend": backend, "events": events, "jobs": len(jobs),
            "events_per_job": events_per_job, "fill_s": fill_s, "rebuild_s": timings,
            "rebuild_best_s": best, "rebuild_median_s": sorted(timings)[len(timings) // 2],
            "events_per_s": events / best, **appends}
