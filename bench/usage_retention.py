"""The SQLite file under a steady stream of usage records, with and without the retention:
simulated days of traffic written as the meter writes them (``UsageStore.write``, batches of
500), and after each day the retention's steps as the server runs them (``UsageStore.prune``
for the policy's cutoff at the day's end). No server, no HTTP: the store alone.

    .venv/bin/python bench/usage_retention.py [--days 14] [--per-day 100000] [--retention-days 7]

Prints the database's size after each day (the file and its WAL, after a checkpoint), both
ways, and the report over the whole period both ways (they must agree).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, text

from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.retention import cutoff
from stratus.store.usage import UsageRecord, UsageStore

START = 1_800_000_000.0
DAY = 86_400
BATCH = 500  # the meter's flush_at


def _day(day: int, per_day: int, chance: random.Random) -> list[UsageRecord]:
    """One day's invocations, in arrival order: three deployments, two revisions each."""
    made = []
    for index in range(per_day):
        started = START + day * DAY + index * DAY / per_day
        duration = chance.uniform(0.005, 0.5)
        made.append(UsageRecord(
            "default", chance.choice(["echo", "chat", "vision"]), chance.choice([1, 2]),
            f"{day}-{index}-{chance.getrandbits(64):016x}", "rep-" + str(chance.randint(1, 4)),
            "native", 200 if chance.random() < 0.99 else 500, False, chance.random() < 0.001,
            started, duration, 0.0005, 512, 90_000_000, 512, 0.5 * duration, 0, 0))
    return made


def _size(engine: Engine, path: Path) -> int:
    with engine.connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def run(days: int, per_day: int, retention_s: float, prune: bool) -> tuple[list[int], tuple[int, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(sqlite_url(Path(scratch)))
        migrate(engine)
        store = UsageStore(engine)
        chance = random.Random(1)
        sizes = []
        for day in range(days):
            records = _day(day, per_day, chance)
            for start in range(0, len(records), BATCH):
                store.write(records[start:start + BATCH], [])
            due = cutoff(START + (day + 1) * DAY, retention_s)
            cursor: str | None = ""
            while prune and due is not None and cursor is not None:
                cursor = store.prune(cursor, due, 2_000).next
            sizes.append(_size(engine, Path(scratch) / "stratus.db"))
        (group,) = store.report("default", START, START + days * DAY, "namespace")
        engine.dispose()
    return sizes, (group.metered.requests, group.metered.gb_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--retention-days", type=float, default=7.0)
    args = parser.parse_args()
    results = {}
    for prune in (False, True):
        began = time.perf_counter()
        results[prune] = run(args.days, args.per_day, args.retention_days * DAY, prune)
        print(f"{'with' if prune else 'without'} the retention: {time.perf_counter() - began:.1f} s")
    print("day   without (MiB)   with (MiB)")
    for day, (kept, pruned) in enumerate(zip(results[False][0], results[True][0], strict=True)):
        print(f"{day + 1:>3}   {kept / 2**20:>13.1f}   {pruned / 2**20:>10.1f}")
    print(f"report over the {args.days} days: without {results[False][1]}, "
          f"with {results[True][1]}")


if __name__ == "__main__":
    main()
