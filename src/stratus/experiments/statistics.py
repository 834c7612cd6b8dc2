"""Significance tests for experiments, pure: a two-proportion z-test for conversion and Welch's
t-test for latency, each with a p-value and a verdict in plain words. No I/O, no clock."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_ALPHA = 0.05
NOT_ENOUGH = "not enough data"


@dataclass(frozen=True)
class Comparison:
    """One comparison of a variant against the control. ``statistic`` and ``p_value`` are None
    when the test cannot be computed (no data, no variance), never NaN."""

    test: str
    statistic: float | None
    p_value: float | None
    significant: bool
    verdict: str

    def view(self, statistic_name: str) -> dict[str, Any]:
        """The report's JSON, with the statistic under its usual letter (z, t)."""
        return {"test": self.test, statistic_name: self.statistic, "p_value": self.p_value,
                "significant": self.significant, "verdict": self.verdict}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """z and the two-sided p-value for "the rate x2/n2 differs from x1/n1", with the pooled
    proportion in the standard error. None when it is undefined: an empty sample, or a pooled
    rate of 0 or 1 (no spread to measure against)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return None
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    # The normal's two-sided tail, 2·sf(|z|), is erfc(|z|/√2): no scipy needed for it.
    return z, math.erfc(abs(z) / math.sqrt(2))


def welch_t(control: Sequence[float], variant: Sequence[float]) -> tuple[float, float] | None:
    """Welch's t (variant minus control) and its two-sided p-value; None with fewer than two
    values on a side or when both sides have no variance (t is then 0/0 or infinite)."""
    if len(control) < 2 or len(variant) < 2:
        return None
    if min(control) == max(control) and min(variant) == max(variant):
        return None
    # Imported here: scipy.stats takes most of a second to import, which every server start
    # (and every test's) would pay for a report that most servers never make.
    from scipy import stats

    # scipy warns of precision loss on near-constant samples; the finiteness check covers it.
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        result = stats.ttest_ind(variant, control, equal_var=False)
    t, p = _finite(float(result.statistic)), _finite(float(result.pvalue))
    return (t, p) if t is not None and p is not None else None


def compare_conversion(control: str, variant: str, control_counts: tuple[int, int],
                       variant_counts: tuple[int, int],
                       alpha: float = DEFAULT_ALPHA) -> Comparison:
    """``*_counts`` are (conversions, requests)."""
    test = "two-proportion z-test"
    (x1, n1), (x2, n2) = control_counts, variant_counts
    if n1 <= 0 or n2 <= 0:
        return Comparison(test, None, None, False, f"{NOT_ENOUGH}: no requests yet")
    if x1 > n1 or x2 > n2:
        # Events are counted apart from requests; a rate above 100% is no proportion to test.
        return Comparison(test, None, None, False,
                          f"{NOT_ENOUGH}: more conversions than requests")
    found = two_proportion_z(x1, n1, x2, n2)
    if found is None:
        why = "every request converted on both sides" if x1 else "no conversions yet"
        return Comparison(test, None, None, False, f"{NOT_ENOUGH}: {why}")
    z, p = found
    significant = p < alpha
    rates = f"{_percent(x2 / n2)} vs {_percent(x1 / n1)}, {format_p(p)}"
    if not significant:
        verdict = f"no significant difference in conversion yet ({format_p(p)})"
    elif z > 0:
        verdict = f"{variant} converts better than {control} ({rates})"
    else:
        verdict = f"{variant} converts worse than {control} ({rates})"
    return Comparison(test, z, p, significant, verdict)


def compare_latency(control: str, variant: str, control_ms: Sequence[float],
                    variant_ms: Sequence[float], alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Mean latency in milliseconds, compared with Welch's t-test."""
    test = "Welch's t-test"
    if len(control_ms) < 2 or len(variant_ms) < 2:
        return Comparison(test, None, None, False,
                          f"{NOT_ENOUGH}: fewer than 2 successful requests on a side")
    found = welch_t(control_ms, variant_ms)
    if found is None:
        return Comparison(test, None, None, False, f"{NOT_ENOUGH}: latencies do not vary")
    t, p = found
    significant = p < alpha
    means = (f"mean {sum(variant_ms) / len(variant_ms):.1f} ms vs "
             f"{sum(control_ms) / len(control_ms):.1f} ms, {format_p(p)}")
    if not significant:
        verdict = f"no significant difference in latency yet ({format_p(p)})"
    elif t < 0:
        verdict = f"{variant} is faster than {control} ({means})"
    else:
        verdict = f"{variant} is slower than {control} ({means})"
    return Comparison(test, t, p, significant, verdict)
