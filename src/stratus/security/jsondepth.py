"""The JSON nesting-depth limit. A body nested deeper than the limit is refused before any
parser sees it: Python's recurses per level and gives up with a RecursionError near 1,000.

An ordinary body costs two ``bytes.count`` calls: a body with no more openers than the limit
cannot nest deeper. Only when it has more is the depth measured exactly, still in C (a regex
drops the strings, ``translate`` keeps the brackets, numpy sums the steps).
"""

from __future__ import annotations

import re

import numpy as np

from stratus.errors import InvalidJSON

DEFAULT_MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # brackets inside are text
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_CHUNK = 1 << 22  # steps summed at a time, to bound the int32 buffer


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data``; brackets in strings do not count.
    An unterminated string's brackets do, which can only overstate the depth of bad JSON."""
    if b'"' in data:
        data = _STRING.sub(b"", data)
    brackets = data.translate(_SQUARE, _NOT_BRACKETS)
    # "[" is 0x5B and "]" 0x5D: 0x5C minus each byte is +1 for an opener, -1 for a closer.
    codes = np.frombuffer(brackets, dtype=np.int8)
    deepest = level = 0
    for start in range(0, len(codes), _CHUNK):
        steps = np.subtract(0x5C, codes[start:start + _CHUNK], dtype=np.int32)
        running = np.cumsum(steps, dtype=np.int32) + level
        deepest = max(deepest, int(running.max()))
        level = int(running[-1])
    return deepest


def exceeds_depth(data: bytes, limit: int) -> bool:
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    return nesting_depth(data) > limit


def check_depth(data: bytes, limit: int) -> None:
    """Refuse (400 ``invalid_json``) a JSON body nested deeper than ``limit``; 0 turns it off."""
    if limit and exceeds_depth(data, limit):
        raise InvalidJSON(f"JSON nesting is deeper than the limit of {limit} levels")
