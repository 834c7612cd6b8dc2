"""Replica picking policy: least in-flight requests between two random choices (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def power_of_two_choices(
    candidates: Sequence[T], load: Callable[[T], int], rng: random.Random
) -> T | None:
    """Pick the less loaded of two distinct random candidates.

    Two random choices get close to the best of all choices while staying O(1) and
    avoiding the herd that always-pick-the-least causes when loads are stale.
    """
    count = len(candidates)
    if count == 0:
        return None
    if count == 1:
        return candidates[0]
    first = rng.randrange(count)
    second = rng.randrange(count - 1)
    if second >= first:
        second += 1
    a, b = candidates[first], candidates[second]
    return b if load(b) < load(a) else a
