"""Quality gates: expressions such as ``accuracy>=0.9, rmse<0.5`` parsed into thresholds, and
the pure verdict on a candidate's metrics, optionally against a baseline's (no regression)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from stratus.errors import BadRequest
from stratus.evaluation.metrics import HIGHER_IS_BETTER, TASKS, metric_names

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
_SPACE = re.compile(r"\s*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR = re.compile(r">=|<=|==|>|<")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_COMMA = re.compile(r",")
MAX_EXPRESSION = 2000


@dataclass(frozen=True)
class Gate:
    """One threshold: ``metric op threshold`` (``text`` is how it was written)."""

    metric: str
    op: str
    threshold: float
    text: str

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)


class _Cursor:
    """Reads one expression string left to right; errors name a 1-based position in it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.at = 0

    def skip_space(self) -> None:
        match = _SPACE.match(self.source, self.at)
        self.at = match.end() if match else self.at

    def take(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.source, self.at)
        if match is None:
            return None
        self.at = match.end()
        return match.group()

    def fail(self, expected: str) -> BadRequest:
        found = repr(self.source[self.at]) if self.at < len(self.source) else "the end"
        return BadRequest(f"gate expression {self.source!r} does not parse at position "
                          f"{self.at + 1}: expected {expected}, found {found}")


def _one(cursor: _Cursor) -> Gate:
    cursor.skip_space()
    start = cursor.at
    metric = cursor.take(_NAME)
    if metric is None:
        raise cursor.fail("a metric name (e.g. accuracy)")
    cursor.skip_space()
    op = cursor.take(_OPERATOR)
    if op is None:
        raise cursor.fail("one of >=, >, <=, <, ==")
    cursor.skip_space()
    number = cursor.take(_NUMBER)
    if number is None:
        raise cursor.fail("a number")
    threshold = float(number)
    if not math.isfinite(threshold):
        raise cursor.fail("a finite number")
    text = cursor.source[start:cursor.at]
    cursor.skip_space()
    return Gate(metric, op, threshold, text)


def parse_expression(source: str) -> list[Gate]:
    """Every gate in one string; gates are separated by commas."""
    if not isinstance(source, str):
        raise BadRequest(f"a gate expression is a string, not {type(source).__name__}")
    if len(source) > MAX_EXPRESSION:
        raise BadRequest(f"gate expression is {len(source)} characters; at most "
                         f"{MAX_EXPRESSION} are accepted")
    if not source.strip():
        raise BadRequest("gate expression is empty: write one like accuracy>=0.9")
    cursor = _Cursor(source)
    gates = [_one(cursor)]
    while cursor.at < len(source):
        if cursor.take(_COMMA) is None:
            raise cursor.fail("',' before the next gate, or the end")
        gates.append(_one(cursor))
    return gates


def check_metrics(gates: Sequence[Gate], task: str | None) -> None:
    """BadRequest for a gate on a metric the evaluation of ``task`` does not produce
    (with no task: one that no evaluation produces)."""
    known = metric_names(task) if task is not None else tuple(HIGHER_IS_BETTER)
    for gate in gates:
        if gate.metric not in known:
            what = f"a {task} evaluation" if task is not None else f"any evaluation ({'/'.join(TASKS)})"
            raise BadRequest(f"gate {gate.text!r}: {gate.metric!r} is not a metric {what} "
                             f"produces; choose from {', '.join(known)}")


def parse_gates(spec: str | Sequence[str] | None, task: str | None = None) -> list[Gate]:
    """Gates from one expression or a list of them (``--gate`` given several times), each
    checked against the metrics of ``task``. None or an empty list means no gate."""
    if spec is None:
        return []
    if isinstance(spec, str):
        gates = parse_expression(spec)
    elif isinstance(spec, Sequence):
        gates = [gate for part in spec for gate in parse_expression(part)]
    else:
        raise BadRequest(f"gates are a string or a list of strings, not {type(spec).__name__}")
    check_metrics(gates, task)
    return gates


@dataclass(frozen=True)
class GateCheck:
    """A threshold judged: the candidate's value, and why it failed when it did."""

    gate: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    reason: str | None = None


@dataclass(frozen=True)
class RegressionCheck:
    """A gated metric against the baseline's: ``higher_is_better`` says which way is worse."""

    metric: str
    candidate: float | None
    baseline: float | None
    tolerance: float
    higher_is_better: bool
    passed: bool
    reason: str | None = None


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    regressions: list[RegressionCheck] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        found = [c.reason for c in self.checks] + [r.reason for r in self.regressions]
        return [reason for reason in found if reason is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "regressions": [asdict(r) for r in self.regressions], "reasons": self.reasons}


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    raw = None if metrics is None else metrics.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return float(raw)


def _threshold(gate: Gate, metrics: Mapping[str, Any]) -> GateCheck:
    value = _value(metrics, gate.metric)
    if value is None:
        return GateCheck(gate.text, gate.metric, gate.op, gate.threshold, None, False,
                         f"{gate.text}: the candidate has no finite {gate.metric}")
    if gate.holds(value):
        return GateCheck(gate.text, gate.metric, gate.op, gate.threshold, value, True)
    return GateCheck(gate.text, gate.metric, gate.op, gate.threshold, value, False,
                     f"{gate.text}: {gate.metric} is {value:.6g}")


def _no_regression(metric: str, candidate: Mapping[str, Any], baseline: Mapping[str, Any],
                   tolerance: float) -> RegressionCheck:
    higher = HIGHER_IS_BETTER[metric]
    new, old = _value(candidate, metric), _value(baseline, metric)
    if new is None or old is None:
        # A baseline without the metric cannot show there is no regression: say so, and
        # fail, rather than let the candidate through unchecked.
        whose = "candidate" if new is None else "baseline"
        return RegressionCheck(metric, new, old, tolerance, higher, False,
                               f"{metric}: the {whose} has no finite {metric} to compare")
    worse_by = (old - new) if higher else (new - old)
    if worse_by > tolerance + 1e-12:
        direction = "lower" if higher else "higher"
        return RegressionCheck(metric, new, old, tolerance, higher, False,
                               f"{metric} regressed: {new:.6g} is {direction} than the "
                               f"baseline's {old:.6g} by {worse_by:.6g} (tolerance {tolerance:g})")
    return RegressionCheck(metric, new, old, tolerance, higher, True)


def judge(gates: Sequence[Gate], candidate_metrics: Mapping[str, Any],
          baseline_metrics: Mapping[str, Any] | None = None,
          tolerance: float = 0.0) -> GateVerdict:
    """Whether the candidate meets every threshold and, given a baseline, is worse than it on
    no gated metric by more than ``tolerance`` (an absolute difference)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) \
            or not math.isfinite(tolerance) or tolerance < 0:
        raise BadRequest(f"tolerance must be a finite number >= 0, not {tolerance!r}")
    checks = [_threshold(gate, candidate_metrics) for gate in gates]
    regressions: list[RegressionCheck] = []
    if baseline_metrics is not None:
        gated = dict.fromkeys(gate.metric for gate in gates if gate.metric in HIGHER_IS_BETTER)
        regressions = [_no_regression(metric, candidate_metrics, baseline_metrics,
                                      float(tolerance)) for metric in gated]
    passed = all(c.passed for c in checks) and all(r.passed for r in regressions)
    return GateVerdict(passed, checks, regressions)
