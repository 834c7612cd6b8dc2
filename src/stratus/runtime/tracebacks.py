"""Tracebacks of a user's code as its author reads them: from the first frame of the bundle on,
with the bundle's temporary directory cut from its file names (``app.py``, ``lib/util.py``)."""

from __future__ import annotations

import os
import traceback
from types import TracebackType

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class HandlerTracebacks:
    """Formats the exceptions of the code in one bundle. Frames before the bundle's first are
    Stratus's own (the replica calling the handler, the loader importing it) and the
    standard library's under them: dropped. A stack with no frame of the bundle (the
    built-in LLM server's) is kept whole, or nothing would be left to read."""

    def __init__(self, bundle_dir: str) -> None:
        roots = {os.path.abspath(bundle_dir), os.path.realpath(bundle_dir)} if bundle_dir else set()
        self.roots = tuple(root.rstrip(os.sep) + os.sep for root in roots)

    def format(self, exc: BaseException) -> str:
        return self.format_exc_info((type(exc), exc, exc.__traceback__))

    def format_exc_info(self, exc_info: ExcInfo) -> str:
        """As ``logging.Formatter.formatException``, which it stands in for."""
        report = traceback.TracebackException(*exc_info)
        seen: set[int] = set()
        pending = [report]
        while pending:  # the chain of causes and contexts, each trimmed alike
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            current.stack = self._trim(current.stack)
            pending.extend(part for part in (current.__cause__, current.__context__) if part)
            pending.extend(current.exceptions or ())  # an ExceptionGroup's members
        return "".join(report.format()).rstrip("\n")

    def _relative(self, filename: str) -> str | None:
        for root in self.roots:
            if filename.startswith(root):
                return filename[len(root):]
        return None

    def _trim(self, stack: traceback.StackSummary) -> traceback.StackSummary:
        first = next((index for index, frame in enumerate(stack)
                      if self._relative(frame.filename) is not None), None)
        if first is None:
            return stack
        frames = list(stack)[first:]
        for frame in frames:
            relative = self._relative(frame.filename)
            if relative is not None:
                # TracebackException has read the source line from the full path already.
                frame.filename = relative
        return traceback.StackSummary.from_list(frames)
