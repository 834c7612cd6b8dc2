"""Incremental detokenization: turn streamed token ids into text deltas that never split a character.

Byte-level tokenizers can cut a multibyte UTF-8 character across tokens, and SentencePiece
ones drop a leading space when a token is decoded alone. So each delta is the difference
between decoding a short window with and without the new tokens, and the window starts a few
tokens back (in the prompt, at first) to give the decoder its context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self._prefix = 0  # window start
        self._read = len(self._ids)  # ids before this are already emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False))

    def push(self, token_id: int) -> str:
        """The new text that ``token_id`` completes ("" while a character is still incomplete)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before):]

    def flush(self) -> str:
        """Whatever is still held when the sequence ends (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before):] if len(after) > len(before) else ""
