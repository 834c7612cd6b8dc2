"""Stop strings on streamed text: emit what cannot be part of a stop, hold back what might be.

A stop string can span several tokens (and several deltas), so text that could be the start
of one is held until the next delta settles it; the stop string itself is never emitted.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to emit after ``text`` arrives; sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        # A match cannot start before the held text: everything earlier was already checked
        # not to be the start of any stop string.
        window = self._held + text
        cut = min((i for i in (window.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return window[:cut]
        keep = self._partial_suffix(window)
        self._held = window[len(window) - keep:] if keep else ""
        return window[: len(window) - keep]

    def _partial_suffix(self, window: str) -> int:
        """Length of the longest suffix of ``window`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(window)), longest, -1):
                if window.endswith(stop[:length]):
                    longest = length
                    break
        return longest

    def flush(self) -> str:
        """The held text, once no more text will come (the sequence ended without a stop)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
