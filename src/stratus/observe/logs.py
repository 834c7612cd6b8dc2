"""The server's logging: JSON lines to ``<data-dir>/logs/server.jsonl``, text or JSON on stderr,
and one access-log record per finished invocation."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from stratus.dispatch.outcomes import Outcome
from stratus.observe.access_line import ACCESS_LOGGER, access_line
from stratus.observe.pii import RECORD_ATTRIBUTES, MaskingFilter

PAYLOAD_LOGGER = "stratus.payloads"
SERVER_LOG = "server.jsonl"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogConfig(BaseModel):
    """The ``logging:`` section of the config file."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "text"] = "text"  # of stderr; the file is always JSON lines
    level: str = "info"
    file: bool = True  # JSON lines in <data-dir>/logs/server.jsonl
    access: bool = True  # one record per finished invocation on the stratus.access logger
    payloads: bool = False  # each invocation's request and response bodies, on stratus.payloads
    mask_pii: bool = True  # e-mails, phone numbers and SSNs masked in every record (observe/pii)

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("level must be debug, info, warning, error or critical")
        return value.lower()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in RECORD_ATTRIBUTES and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # masked
        return json.dumps(entry, default=str, separators=(",", ":"))


FLUSH_S = 0.5
_server_log: _BatchedFileHandler | None = None  # set by setup_logging; the access log's sink


class _QueueHandler(logging.handlers.QueueHandler):
    """Skips the stdlib's format-and-copy for plain records: an access line per request is
    on the event loop, and its arguments are strings and numbers that do not change later."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info is not None or record.stack_info is not None:
            prepared: logging.LogRecord = super().prepare(record)
            return prepared
        record.message = record.msg = record.getMessage()
        record.args = None
        return record


class _BatchedFileHandler(logging.FileHandler):
    """Writes through the file's buffer and flushes every ``FLUSH_S`` (or at once for a
    warning or worse): a flush per access line took a fifth of a busy gateway's CPU."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.ready: list[str] = []  # batches of lines made on the event loop (access log)
        self._closed = threading.Event()
        threading.Thread(target=self._flush_often, name="log-flush", daemon=True).start()

    def flush(self) -> None:
        """``StreamHandler.emit`` calls this after every record; the thread flushes instead."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self._flush_now()

    def _flush_now(self) -> None:
        batches, self.ready = self.ready, []  # a list swap is atomic
        text = "".join(batches)
        with self.lock:  # type: ignore[union-attr]
            if self.stream is not None and not self.stream.closed:
                if text:
                    self.stream.write(text)
                self.stream.flush()

    def _flush_often(self) -> None:
        while not self._closed.wait(FLUSH_S):
            self._flush_now()

    def close(self) -> None:
        self._closed.set()
        self._flush_now()
        super().close()


class _NotAccess(logging.Filter):
    """Keeps the per-invocation lines out of a human's terminal; the JSON file has them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != ACCESS_LOGGER and record.name != PAYLOAD_LOGGER


def log_config(section: dict[str, Any]) -> LogConfig:
    try:
        return LogConfig.model_validate(section)
    except ValueError as exc:
        raise ValueError(f"invalid logging section of the config file: {exc}") from None


def setup_logging(section: dict[str, Any], log_dir: Path, level: str | None = None) -> LogConfig:
    """Replace the root logger's handlers per the config; ``level`` (a CLI flag) wins over it.

    The file handler runs behind a queue, so formatting and disk writes stay off the loop.
    """
    config = log_config(section)
    if level is not None:
        config = config.model_copy(update={"level": level})
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(config.level.upper())
    masking = [MaskingFilter()] if config.mask_pii else []
    stderr = logging.StreamHandler(sys.stderr)
    stderr.filters.extend(masking)
    if config.format == "json":
        stderr.setFormatter(JsonFormatter())
    else:
        stderr.setFormatter(logging.Formatter(TEXT_FORMAT))
        stderr.addFilter(_NotAccess())
    root.addHandler(stderr)
    if config.file:
        log_dir.mkdir(parents=True, exist_ok=True)
        global _server_log
        target = _server_log = _BatchedFileHandler(log_dir / SERVER_LOG)
        target.setFormatter(JsonFormatter())
        target.filters.extend(masking)  # on the writer's thread, off the event loop
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(records, target, respect_handler_level=True)
        listener.start()
        atexit.register(listener.stop)  # drains what is queued before the process ends
        root.addHandler(_QueueHandler(records))
    logging.getLogger(ACCESS_LOGGER).disabled = not config.access
    logging.captureWarnings(True)
    return config


class AccessLog:
    """A dispatcher listener: one JSON line per finished invocation in ``server.jsonl``.

    The request path only keeps the outcome. Every ``FLUSH_S`` a task on the event loop turns
    what finished into lines, a few hundred at a time, and hands the text to the log file's
    flush thread, which only writes. A log record per invocation (record, queue, formatter,
    handler) cost a quarter of a busy gateway's throughput; formatting on the flush thread
    held the GIL for whole switch intervals (5 ms) and made the p99 of busy requests 25-30 ms.
    """

    CHUNK = 256  # lines made between two turns of the loop: well under a millisecond

    def __init__(self) -> None:
        handler = _server_log
        logger = logging.getLogger(ACCESS_LOGGER)
        self.enabled = handler is not None and not logger.disabled \
            and logger.isEnabledFor(logging.INFO)
        self._handler = handler if self.enabled else None
        self._pending: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None

    def __call__(self, outcome: Outcome) -> None:
        if self.enabled:
            self._pending.append(outcome)

    def start(self) -> None:
        if self._handler is not None:
            self._task = asyncio.create_task(self._writing(), name="access-log")

    async def close(self) -> None:
        """Stop, and hand over every line still pending."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.drain()

    def drain(self) -> None:
        """Make the lines of everything pending at once (at shutdown, and in tests)."""
        batch, self._pending = self._pending, []
        if batch and self._handler is not None:
            self._handler.ready.append("".join(access_line(outcome) + "\n" for outcome in batch))

    async def _writing(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            batch, self._pending = self._pending, []
            for start in range(0, len(batch), self.CHUNK):
                chunk = batch[start:start + self.CHUNK]
                assert self._handler is not None
                self._handler.ready.append("".join(access_line(o) + "\n" for o in chunk))
                await asyncio.sleep(0)


def parse_since(text: str, now: float | None = None) -> float:
    """``10m``, ``90s``, ``2h``, ``1d`` ago, or an ISO 8601 time, as Unix seconds."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        try:
            amount = float(text[:-1])
        except ValueError:
            amount = -1.0
        if amount >= 0:
            return (time.time() if now is None else now) - amount * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since must be a duration like 10m, 2h or 1d, or an ISO time, "
                         f"not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
