"""A light load client: keep-alive HTTP/1.1 connections on raw asyncio streams, one request
on a connection at a time, for the open-loop load of the retry and overload tests."""

from __future__ import annotations

import asyncio
import time


class Connections:
    """Keep-alive HTTP/1.1 connections to the server, for the load: httpx spends a
    millisecond of CPU a request, which on a shared two-core machine capped the rate below
    200 a second (and, holding thousands of queued requests, made the overload run's figures
    the client's); this spends a fraction of that. Only what the gateway answers is parsed:
    a status line, headers, a body of ``content-length`` bytes (or chunks, as a peer's
    proxy sends them for ``bench/reliability.py``).

    ``size`` caps the connections open at once: an open-loop caller sizes it to its offered
    load (rate x its timeout), so that a request never waits here for a connection, which
    would turn the open loop into a closed one."""

    IDLE_S = 2.0  # reuse a connection idle for less than this (the gateway keeps 5 s)

    def __init__(self, port: int, key: str, size: int = 100_000) -> None:
        self.port = port
        self.auth = f"authorization: Bearer {key}\r\n"
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(size)

    async def post(self, path: str, body: bytes, headers: dict[str, str],
                   timeout_s: float | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request and its answer; raises TimeoutError after ``timeout_s`` (the
        connection, left mid-answer, is closed), OSError or IncompleteReadError when the
        connection fails."""
        async with self.slots:
            reader, writer = await self._connection()
            try:
                answer = await asyncio.wait_for(self._exchange(reader, writer, path, body,
                                                               headers), timeout_s)
            except BaseException:
                writer.close()  # its state is unknown: never reused
                raise
            if answer[1].get("connection", "").lower() == "close":
                writer.close()  # the server closes it after this answer (RFC 9112, 9.6)
            else:
                self.free.append((reader, writer, time.monotonic()))
            return answer

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.free:
            reader, writer, used = self.free.pop()
            if now - used < self.IDLE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        path: str, body: bytes,
                        headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        extra = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
        writer.write((f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{self.auth}{extra}"
                      f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                      ).encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = dict(line.split(": ", 1) for line in head[1:] if line)
        answer = {key.lower(): value for key, value in fields.items()}
        if answer.get("transfer-encoding") == "chunked":  # a peer's proxy (Ray Serve's uvicorn)
            return status, answer, await self._chunked(reader)
        content = await reader.readexactly(int(answer.get("content-length", "0")))
        return status, answer, content

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the blank line
            pass
        return b"".join(parts)

    def close(self) -> None:
        for _, writer, _ in self.free:
            writer.close()
