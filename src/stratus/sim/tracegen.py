"""A seeded generator of realistic mixed serverless traces, and the trace CSV format
(``timestamp_s,deployment,duration_ms``, sorted by time). The model: docs/trace-generator.md."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stratus.sim.simulator import Invocation

HEADER = ("timestamp_s", "deployment", "duration_ms")
DAY_S = 86400.0
# Shares of the deployment classes; counts are rounded by the largest remainder.
CLASS_SHARES: dict[str, float] = {
    "periodic": 0.30, "diurnal": 0.30, "bursty": 0.15, "rare": 0.15, "heavy": 0.10,
}
PERIODS_S = (60, 120, 300, 600, 900, 1800, 3600)  # timer triggers: 1 to 60 minutes
MAX_DURATION_MS = 900_000.0  # 15 minutes, the longest a FaaS invocation may run

Times = npt.NDArray[np.float64]


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the line."""


def class_counts(deployments: int) -> dict[str, int]:
    """How many deployments of each class: shares rounded so that they add up."""
    exact = {name: share * deployments for name, share in CLASS_SHARES.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    left = deployments - sum(counts.values())
    for name in sorted(exact, key=lambda n: (counts[n] - exact[n], list(exact).index(n)))[:left]:
        counts[name] += 1
    return counts


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


# -- arrival processes: each returns arrival times in [0, horizon) ---------------------------
def _periodic(rng: np.random.Generator, horizon: float) -> Times:
    period = float(rng.choice(PERIODS_S))
    if rng.random() < 0.5:
        # Cron-like: on whole minutes from midnight ("*/5 * * * *", "17 * * * *"), plus the
        # scheduler's small lag.
        offset = 60.0 * float(rng.integers(0, int(period) // 60))
        base = np.arange(offset, horizon, period)
        times: Times = base + rng.exponential(0.3, base.size)
    else:
        base = np.arange(rng.uniform(0.0, period), horizon, period)
        times = base + rng.normal(0.0, 0.01 * period, base.size)  # a timer drifting by ~1%
    return times


def _diurnal(rng: np.random.Generator, horizon: float) -> Times:
    mean = _log_uniform(rng, 0.01, 0.3)  # requests per second, over a day
    amplitude = rng.uniform(0.5, 0.95)
    peak_s = rng.uniform(10.0, 20.0) * 3600.0  # busiest hour, UTC
    top = mean * (1.0 + amplitude)
    # Thinning (Lewis-Shedler): a Poisson process at the top rate, each arrival kept with
    # probability rate(t) / top.
    times = np.sort(rng.uniform(0.0, horizon, rng.poisson(top * horizon)))
    rate = mean * (1.0 + amplitude * np.cos(2.0 * np.pi * (times - peak_s) / DAY_S))
    kept: Times = times[rng.random(times.size) * top < rate]
    return kept


def _bursty(rng: np.random.Generator, horizon: float) -> Times:
    off_mean = rng.uniform(900.0, 7200.0)
    on_mean = rng.uniform(20.0, 180.0)
    on_rate = _log_uniform(rng, 1.0, 10.0)
    bursts: list[Times] = []
    t = rng.uniform(0.0, off_mean)
    while t < horizon:
        length = rng.exponential(on_mean)
        bursts.append(rng.uniform(t, t + length, rng.poisson(on_rate * length)))
        t += length + rng.exponential(off_mean)
    return np.concatenate(bursts) if bursts else np.empty(0)


def _rare(rng: np.random.Generator, horizon: float) -> Times:
    per_day = rng.uniform(1.0, 6.0)
    count = max(1, int(rng.poisson(per_day * horizon / DAY_S)))
    return rng.uniform(0.0, horizon, count)


def _steady(rng: np.random.Generator, horizon: float) -> Times:
    rate = _log_uniform(rng, 0.002, 0.02)
    return rng.uniform(0.0, horizon, rng.poisson(rate * horizon))


# -- durations --------------------------------------------------------------------------------
def _lognormal(rng: np.random.Generator) -> Callable[[int], Times]:
    median_ms = _log_uniform(rng, 20.0, 2000.0)
    sigma = rng.uniform(0.3, 1.2)
    return lambda size: median_ms * np.exp(sigma * rng.standard_normal(size))


def _pareto(rng: np.random.Generator) -> Callable[[int], Times]:
    floor_ms = _log_uniform(rng, 200.0, 5000.0)
    alpha = rng.uniform(1.2, 2.5)
    return lambda size: floor_ms * (1.0 + rng.pareto(alpha, size))  # numpy's is Lomax


ARRIVALS = {"periodic": _periodic, "diurnal": _diurnal, "bursty": _bursty, "rare": _rare,
            "heavy": _steady}


def generate_trace(deployments: int = 50, hours: float = 24.0, seed: int = 0) -> list[Invocation]:
    """The invocations of ``deployments`` deployments over ``hours`` from t=0 (midnight UTC),
    sorted by time (then deployment)."""
    if deployments < 1 or not hours > 0:
        raise ValueError("need at least one deployment and a positive number of hours")
    horizon = hours * 3600.0
    names = [f"{kind}-{i:02d}" for kind, count in class_counts(deployments).items()
             for i in range(count)]
    # One stream per deployment: its draws do not depend on how many others there are.
    streams = np.random.SeedSequence(seed).spawn(len(names))
    all_times: list[Times] = []
    all_durations: list[Times] = []
    owners: list[npt.NDArray[np.int64]] = []
    for index, (name, stream) in enumerate(zip(names, streams, strict=True)):
        rng = np.random.Generator(np.random.PCG64(stream))
        kind = name.rsplit("-", 1)[0]
        times: Times = np.round(ARRIVALS[kind](rng, horizon), 3)
        times = times[(times >= 0.0) & (times < horizon)]
        sample = _pareto(rng) if kind == "heavy" else _lognormal(rng)
        durations: Times = np.clip(sample(times.size), 1.0, MAX_DURATION_MS)
        durations = np.round(durations, 3)
        all_times.append(times)
        all_durations.append(durations)
        owners.append(np.full(times.size, index, dtype=np.int64))
    owner = np.concatenate(owners)
    order = np.lexsort((owner, np.concatenate(all_times)))
    columns = (np.concatenate(all_times)[order].tolist(), owner[order].tolist(),
               np.concatenate(all_durations)[order].tolist())
    return [Invocation(t, names[o], d) for t, o, d in zip(*columns, strict=True)]


def trace_lines(invocations: Iterable[Invocation]) -> Iterable[str]:
    yield ",".join(HEADER) + "\n"
    for t, name, duration in invocations:
        yield f"{t:.3f},{name},{duration:.3f}\n"


def write_trace(path: Path, invocations: Iterable[Invocation]) -> None:
    with path.open("w", encoding="utf-8") as file:
        file.writelines(trace_lines(invocations))


def _number(text: str, field: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"line {line}: {field} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"line {line}: {field} {text.strip()!r} is not a finite number")
    return value


def parse_trace(lines: Iterable[str]) -> list[Invocation]:
    """Rows of ``timestamp_s,deployment,duration_ms`` after that header; blank lines are
    skipped, and rows out of time order are sorted (the simulator needs time order)."""
    rows = iter(lines)
    first = next(rows, "")
    header = tuple(part.strip() for part in first.strip().lstrip("\ufeff").split(","))
    if header != HEADER:
        raise TraceError(f"line 1: expected the header {','.join(HEADER)!r}, got {first.strip()!r}")
    invocations: list[Invocation] = []
    for number, line in enumerate(rows, start=2):
        text = line.strip()
        if not text:
            continue
        parts = text.split(",")
        if len(parts) != 3:
            raise TraceError(f"line {number}: expected 3 fields ({','.join(HEADER)}), "
                             f"got {len(parts)}")
        timestamp = _number(parts[0], "timestamp_s", number)
        name = parts[1].strip()
        if not name:
            raise TraceError(f"line {number}: empty deployment name")
        duration = _number(parts[2], "duration_ms", number)
        if duration < 0:
            raise TraceError(f"line {number}: duration_ms {duration:g} is negative")
        invocations.append(Invocation(timestamp, name, duration))
    if not invocations:
        raise TraceError("the trace has no invocations")
    if any(a.timestamp_s > b.timestamp_s for a, b in pairwise(invocations)):
        invocations.sort(key=lambda inv: inv.timestamp_s)
    return invocations


def read_trace(path: Path) -> list[Invocation]:
    with path.open(encoding="utf-8") as file:
        return parse_trace(file)
