"""Helpers in a module of their own: a traceback through them names this file."""

from __future__ import annotations


def parse_amount(text: str) -> int:
    euros, _, cents = text.partition(".")
    return int(euros) * 100 + _cents(cents)


def _cents(text: str) -> int:
    if len(text) > 2:
        raise ValueError(f"an amount has at most two decimals, not {text!r}")
    return int(text.ljust(2, "0") or 0)


def check_ready() -> None:
    raise RuntimeError("the model weights are missing")
