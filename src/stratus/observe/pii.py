"""PII masking for the logs: e-mail addresses, phone numbers and SSN-shaped numbers become
``[email]``, ``[phone]`` and ``[ssn]``. ``mask`` is the pure rule; ``MaskingFilter`` applies it
to every log record a handler writes: its message, its exception text and its extra fields."""

from __future__ import annotations

import logging
import re
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}

# Boundaries: nothing glued on either side that makes the digits part of something longer (a
# request id, a version, a date such as 2024-01-15, a float, a longer run of digits). The check
# of what precedes a match comes after its first character (a two-character lookbehind), so
# the regex engine can skip ahead to the next digit, "(" or "+" instead of trying each position.
_START = r"(?<![\w.+-][\s\S])"
_END = r"(?![\w-]|\.\d)"
_NANP = r"(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # 555-123-4567, (555) 123-4567, ...
_NUMBERS: list[tuple[str, str]] = [
    ("ssn", r"\d" + _START + r"\d{2}-\d{2}-\d{4}" + _END),
    ("phone", r"\+" + _START + r"\d{1,3}[ .-]?" + _NANP + _END),  # +1 555 123 4567, +44-...
    ("phone", r"1" + _START + r"[ .-]" + _NANP + _END),  # 1-555-123-4567
    ("phone", r"[\d(]" + _START + r"(?:(?<=\()\d{3}\)[ .-]?|\d{2}[ .-])\d{3}[ .-]\d{4}" + _END),
    ("phone", r"\+" + _START + r"\d{10,14}" + _END),  # E.164: +15551234567
]
_NUMBER = re.compile("|".join(f"(?P<{kind}{index}>{pattern})"
                              for index, (kind, pattern) in enumerate(_NUMBERS)))
_LABELS = {f"{kind}{index}": f"[{kind}]" for index, (kind, _) in enumerate(_NUMBERS)}
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


def _label(match: re.Match[str]) -> str:
    return _LABELS[match.lastgroup or ""]


def mask(text: str) -> str:
    """``text`` with every e-mail address, phone number and SSN-shaped number masked."""
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    return _NUMBER.sub(_label, text)


def mask_value(value: Any) -> Any:
    """Strings masked, and strings inside lists and dicts; anything else as it is."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item) for item in value]
    return value


class MaskingFilter(logging.Filter):
    """Masks what a record carries before a handler formats it. It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        for key, value in record.__dict__.items():
            if key not in RECORD_ATTRIBUTES and isinstance(value, str | dict | list | tuple):
                record.__dict__[key] = mask_value(value)
        return True
