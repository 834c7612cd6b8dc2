"""A replica's stdout and stderr become JSON lines in its deployment's log, each tagged with
the replica, deployment, revision and stream.

File descriptors 1 and 2 are pipes read by one thread, so ``print()``, C extensions and child
processes are all captured. A line that is already a JSON object (the ``ctx.logger``'s) keeps
its fields and gains the tags. What a handler writes through ``sys.stdout`` or ``sys.stderr``
while it serves a request skips the pipes and gains the request's tags (``request_log``).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import sys
import threading
import time
from typing import Any

from stratus.runtime.request_log import install_streams, set_sink

MAX_LINE = 64 * 1024  # a longer run of bytes without a newline is cut into lines this long
_STREAMS = {1: "stdout", 2: "stderr"}


def tag_line(raw: bytes, stream: str, tags: dict[str, Any], now: float) -> bytes:
    """One captured line as a JSON line with the tags; blank lines give nothing."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    if not text.strip():
        return b""
    entry: dict[str, Any] | None = None
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry = {"ts": round(now, 6), **tags, **parsed, "stream": stream}
    if entry is None:
        entry = {"ts": round(now, 6), **tags, "stream": stream, "message": text}
    return json.dumps(entry, default=str, separators=(",", ":")).encode() + b"\n"


class OutputCapture:
    """Points fds 1 and 2 at pipes and appends what comes out of them, tagged, to ``log_path``."""

    def __init__(self, log_path: str, tags: dict[str, Any]) -> None:
        self.log_path = log_path
        self.tags = dict(tags)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        selector = selectors.DefaultSelector()
        for fd, name in _STREAMS.items():
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            selector.register(read_end, selectors.EVENT_READ, name)
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)
        install_streams()
        set_sink(self.emit)
        self._thread = threading.Thread(target=self._pump, args=(selector,), daemon=True,
                                        name="output-capture")
        self._thread.start()

    def _pump(self, selector: selectors.BaseSelector) -> None:
        pending: dict[str, bytes] = {name: b"" for name in _STREAMS.values()}
        while selector.get_map():
            for key, _ in selector.select():
                name: str = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:  # every writer closed it: the process is ending
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    lines, pending[name] = [pending[name]], b""
                else:
                    lines = (pending[name] + chunk).split(b"\n")
                    pending[name] = lines.pop()
                    while len(pending[name]) >= MAX_LINE:
                        lines.append(pending[name][:MAX_LINE])
                        pending[name] = pending[name][MAX_LINE:]
                now = time.time()
                data = b"".join(tag_line(line, name, self.tags, now) for line in lines)
                if data:
                    self._write(data)

    def emit(self, text: str, stream: str, extra: dict[str, str]) -> None:
        """A line a request wrote, on its own thread: tagged with the request, written at once."""
        raw = text.encode("utf-8", errors="replace")
        tags = {**self.tags, **extra}
        now = time.time()
        self._write(b"".join(tag_line(raw[start:start + MAX_LINE], stream, tags, now)
                             for start in range(0, max(len(raw), 1), MAX_LINE)))

    def _write(self, data: bytes) -> None:
        # A full or vanished disk must not take the replica down.
        with contextlib.suppress(OSError):
            os.write(self._log_fd, data)  # one append per read: lines of replicas do not mix

    def close(self, timeout: float = 2.0) -> None:
        """Flush, end the pipes and wait for the thread to write what they held."""
        if self._thread is None:
            return
        set_sink(None)  # what requests write from now on goes through the pipes
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in _STREAMS:
            os.dup2(null, fd)  # the last write ends close; the reader sees the end of file
        os.close(null)
        self._thread.join(timeout)
        self._thread = None


_active: OutputCapture | None = None


def capture_output(log_path: str, tags: dict[str, Any]) -> None:
    """Start capturing this process's stdout and stderr into ``log_path``."""
    global _active
    _active = OutputCapture(log_path, tags)
    _active.start()


def finish_capture() -> None:
    """Write out what is still in the pipes; call before ``os._exit``."""
    if _active is not None:
        _active.close()
