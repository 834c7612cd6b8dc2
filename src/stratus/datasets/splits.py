"""Seeded splits of a dataset's rows (``train=0.8,test=0.2``): which rows each split holds is a
function of the seed, the fractions and the row count alone, so every reader sees the same rows.

The rows are permuted by ``numpy.random.Generator(PCG64(seed))``; the splits, in the order of
their names, take consecutive stretches of that permutation, each as large as its fraction of
the rows (the remainders go to the largest fractional parts), and each split keeps its rows in
the file's order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from stratus.errors import BadRequest

TOLERANCE = 1e-6
MAX_SPLITS = 32
MAX_SEED = 2**63 - 1


def check_split_name(name: str) -> str:
    if not (name.isascii() and name.isidentifier() and len(name) <= 63):
        raise BadRequest(f"split name {name!r} must be an identifier (letters, digits and '_', "
                         "not starting with a digit; at most 63)")
    return name


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadRequest(f"seed {seed!r} must be an integer from 0 to 2**63-1")
    return seed


def check_fractions(fractions: Mapping[str, Any]) -> dict[str, float]:
    """The fractions as given, checked: identifiers, each positive, summing to 1 (within 1e-6)."""
    if not fractions:
        raise BadRequest("a split names at least one part, for example train=0.8,test=0.2")
    if len(fractions) > MAX_SPLITS:
        raise BadRequest(f"a split has at most {MAX_SPLITS} parts, not {len(fractions)}")
    checked: dict[str, float] = {}
    for name, value in fractions.items():
        check_split_name(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"split {name!r}: the fraction {value!r} is not a number")
        if not math.isfinite(value) or value <= 0:
            raise BadRequest(f"split {name!r}: the fraction {value!r} must be positive")
        checked[name] = float(value)
    total = math.fsum(checked.values())
    if abs(total - 1.0) > TOLERANCE:
        raise BadRequest(f"the split's fractions sum to {total:g}, not 1")
    return checked


def parse_split(text: str) -> dict[str, float]:
    """``train=0.8,test=0.2`` as checked fractions."""
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, raw = part.strip().partition("=")
        name = name.strip()
        if not sep or not name:
            raise BadRequest(f"split {text!r}: each part is NAME=FRACTION, not {part.strip()!r}")
        if name in fractions:
            raise BadRequest(f"split {text!r} names {name!r} twice")
        try:
            fractions[name] = float(raw)
        except ValueError:
            raise BadRequest(f"split {name!r}: the fraction {raw.strip()!r} is not a number") from None
    return check_fractions(fractions)


def split_sizes(rows: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """How many rows each split holds, summing to ``rows``; keyed in the order of the names."""
    names = sorted(fractions)
    total = math.fsum(fractions.values())
    exact = [rows * fractions[name] / total for name in names]
    sizes = [math.floor(value) for value in exact]
    order = sorted(range(len(names)), key=lambda i: (sizes[i] - exact[i], i))
    for step in range(rows - sum(sizes)):
        sizes[order[step % len(order)]] += 1
    return dict(zip(names, sizes, strict=True))


def split_indices(rows: int, seed: int, fractions: Mapping[str, float],
                  name: str) -> npt.NDArray[np.int64]:
    """The row numbers of split ``name``, ascending."""
    if name not in fractions:
        raise KeyError(name)
    permutation = np.random.Generator(np.random.PCG64(seed)).permutation(rows)
    start = 0
    for part, size in split_sizes(rows, fractions).items():
        if part == name:
            return np.sort(permutation[start:start + size]).astype(np.int64)
        start += size
    raise AssertionError("unreachable: every name has a size")


def describe(rows: int, seed: int, fractions: Mapping[str, float]) -> dict[str, Any]:
    """What a version records of its split (the sizes are for people; readers recompute)."""
    return {"seed": seed, "fractions": dict(fractions), "sizes": split_sizes(rows, fractions)}
