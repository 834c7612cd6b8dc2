"""What a handler prints or logs while it serves a request, tagged with that request: its
``request_id`` always, and the ``trace_id`` and ``span_id`` of the span current as it writes.

``sys.stdout`` and ``sys.stderr`` become ``TaggedStream``s. Outside a request they pass text to
the real streams, whose pipes the capture thread reads; within one (the handler's thread or
task, where ``current_request`` is set) whole lines go straight to the log as JSON, since the
capture thread could not tell which request a line in a pipe came from.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, TextIO

from opentelemetry import trace

# Takes (text without its newline, stream name, the request's tags).
Sink = Callable[[str, str, dict[str, str]], None]


class RequestLines:
    """One request's place in the log: its id, whether it has a trace (a traceparent came
    with it), and what it wrote without a newline yet."""

    __slots__ = ("partial", "request_id", "traced")

    def __init__(self, request_id: str, traced: bool) -> None:
        self.request_id = request_id
        self.traced = traced
        self.partial: dict[str, str] | None = None  # by stream; made by the first write

    def tags(self) -> dict[str, str]:
        tags = {"request_id": self.request_id}
        if not self.traced:  # a span the handler opened would have ids of no trace at all
            return tags
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            tags["trace_id"] = trace.format_trace_id(context.trace_id)
            tags["span_id"] = trace.format_span_id(context.span_id)
        return tags

    def close(self, sink: Sink | None) -> None:
        """The request is done: what it left without a newline is a line too."""
        if self.partial and sink is not None:
            for stream, text in self.partial.items():
                if text:
                    sink(text, stream, self.tags())
        self.partial = None


current_request: ContextVar[RequestLines | None] = ContextVar("stratus_request", default=None)
_sink: Sink | None = None  # set once the process's output is captured


def set_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def finish_request(lines: RequestLines) -> None:
    lines.close(_sink)


class TaggedStream:
    """Stands in for ``sys.stdout`` or ``sys.stderr``; everything but writing is the real
    stream's (``fileno``, ``buffer``, ``reconfigure`` ...)."""

    def __init__(self, inner: TextIO, name: str) -> None:
        self._inner = inner
        self._name = name

    def write(self, text: str) -> int:
        lines = current_request.get()
        sink = _sink
        if lines is None or sink is None:
            return self._inner.write(text)
        partial = lines.partial
        if partial is None:
            partial = lines.partial = {}
        pending = partial.get(self._name, "") + text
        if "\n" in pending:
            *whole, pending = pending.split("\n")
            tags = lines.tags()
            for line in whole:
                sink(line, self._name, tags)
        partial[self._name] = pending
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install_streams() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` tagged streams, once. Done in the revision zygote
    before the user's module is imported, so a logging handler made at import writes to them."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, TaggedStream):
            setattr(sys, name, TaggedStream(stream, name))
