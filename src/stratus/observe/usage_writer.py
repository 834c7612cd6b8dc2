"""Usage records written by a child process, so that SQLite's per-row work never holds the
gateway's GIL: in-process, the writer thread took a tenth of a busy gateway's samples and
made the event loop hand the GIL over at every batch.

The gateway sends each batch as one msgpack frame on the child's stdin and awaits a one-line
answer, so a failed write is reported to the meter, which keeps the batch and retries. A child
that died is started again on the next write. The usage retention's steps go the same way,
between batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
from collections.abc import Sequence
from dataclasses import astuple
from typing import BinaryIO

import msgpack

from stratus.errors import InsufficientStorage
from stratus.resilience.disk import DiskHealth
from stratus.store.usage import CapacityMinute, UsageRecord, UsageStore
from stratus.store.usage_rollup import PruneStep

log = logging.getLogger("stratus.usage")

URL_ENV = "STRATUS_USAGE_WRITER_DB"  # the database URL; not in argv, where ps shows it
_LENGTH = struct.Struct("!I")
ANSWER_TIMEOUT_S = 60.0
WRITE, PRUNE = 0, 1  # a frame's first item: what the child is asked to do


class ProcessWriter:
    """``await writer(records, minutes)`` stores one batch through the child process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.disk = DiskHealth()  # the server's own is set in its place: /readyz reads it
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, records: Sequence[UsageRecord], minutes: Sequence[CapacityMinute]) -> None:
        await self._ask(msgpack.packb([WRITE, list(records),
                                       [astuple(minute) for minute in minutes]]))

    async def prune(self, cursor: str, cutoff: float, limit: int) -> PruneStep:
        """One step of the usage retention (``UsageStore.prune``), done by the child between
        two batches of records: the two never wait on each other's lock."""
        rolled, following = json.loads(await self._ask(msgpack.packb([PRUNE, cursor, cutoff,
                                                                        limit])))
        return PruneStep(rolled, following)

    async def _ask(self, frame: bytes) -> str:
        """Send one frame; its answer's text after ``ok``, or a RuntimeError with its failure."""
        async with self._lock:
            process = await self._running()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(_LENGTH.pack(len(frame)) + frame)
                await process.stdin.drain()
                answer = await asyncio.wait_for(process.stdout.readline(), ANSWER_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                await self._stop(process)
                raise RuntimeError(f"the usage writer did not answer: {exc!r}") from None
            except asyncio.CancelledError:
                # Its answer, or the rest of the frame, would be taken by the next caller's:
                # a stale "ok" for a write that failed, then that failure for one that did not.
                process.kill()
                if self._process is process:
                    self._process = None
                raise
            if answer.startswith(b"ok"):
                self.disk.succeeded("usage")
                return answer[2:].decode().strip()
            if not answer:
                await self._stop(process)
            failure = answer.decode(errors="replace").strip()
            if failure.startswith(f"{InsufficientStorage.__name__}:"):  # the engine's 507
                self.disk.failed("usage", failure.partition(": ")[2])
            raise RuntimeError(f"the usage writer failed: {failure}")

    async def close(self) -> None:
        """Let the child finish what it has and exit."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "stratus.observe.usage_writer",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, URL_ENV: self.database_url})
        return self._process

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if self._process is process:
            self._process = None


def serve(store: UsageStore, source: BinaryIO, sink: BinaryIO) -> None:
    """The child's loop: frames in, one answer line out per frame, until stdin closes."""
    read = source.read
    while True:
        head = read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        payload = read(_LENGTH.unpack(head)[0])
        try:
            kind, *body = msgpack.unpackb(payload)
            if kind == PRUNE:
                step = store.prune(*body)
                answer = f"ok {json.dumps([step.rolled, step.next])}\n".encode()
            else:
                records, minutes = body
                store.write([UsageRecord(*row) for row in records],
                            [CapacityMinute(*row) for row in minutes])
                answer = b"ok\n"
        except Exception as exc:  # reported to the gateway, which keeps the batch and retries
            answer = f"{type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n"
        sink.write(answer)
        sink.flush()


def main() -> None:
    from stratus.store.db import make_engine

    engine = make_engine(os.environ[URL_ENV])
    try:
        serve(UsageStore(engine), sys.stdin.buffer, sys.stdout.buffer)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
