"""Gate expressions (parsing, the positions of parse errors, metric names a task does not
produce) and the verdict on a candidate, alone and against a baseline."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.errors import BadRequest
from stratus.evaluation.gate import Gate, judge, parse_expression, parse_gates


def test_one_gate() -> None:
    assert parse_gates("accuracy>=0.9") == [Gate("accuracy", ">=", 0.9, "accuracy>=0.9")]


def test_several_gates_with_spaces_commas_and_a_list() -> None:
    gates = parse_gates(" accuracy >= 0.9 , f1_macro>.85,precision_macro==1 ")
    assert [(g.metric, g.op, g.threshold) for g in gates] == [
        ("accuracy", ">=", 0.9), ("f1_macro", ">", 0.85), ("precision_macro", "==", 1.0)]
    assert [g.text for g in gates] == ["accuracy >= 0.9", "f1_macro>.85", "precision_macro==1"]
    listed = parse_gates(["rmse<0.5", "mae<=1e-1, r2>-2.5E+0"], task="regression")
    assert [(g.metric, g.op, g.threshold) for g in listed] == [
        ("rmse", "<", 0.5), ("mae", "<=", 0.1), ("r2", ">", -2.5)]


def test_no_gate() -> None:
    assert parse_gates(None) == []
    assert parse_gates([]) == []


@pytest.mark.parametrize(("source", "position", "expected", "found"), [
    ("accuracy=>0.9", 9, "one of >=, >, <=, <, ==", "'='"),
    ("accuracy>=", 11, "a number", "the end"),
    (">=0.9", 1, "a metric name", "'>'"),
    ("accuracy>=0.9,", 15, "a metric name", "the end"),
    ("accuracy>=0.9 rmse<1", 15, "',' before the next gate", "'r'"),
    ("accuracy >= nan", 13, "a number", "'n'"),
    ("accuracy>=0.9.5", 14, "','", "'.'"),
    ("accuracy>=90%", 13, "','", "'%'"),
    ("accuracy ≥ 0.9", 10, "one of >=", "'≥'"),
])
def test_parse_errors_name_the_position(source: str, position: int, expected: str,
                                        found: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_expression(source)
    message = caught.value.message
    assert caught.value.status == 400
    assert f"at position {position}:" in message
    assert f"expected {expected}" in message
    assert f"found {found}" in message


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_expression(source: str) -> None:
    with pytest.raises(BadRequest, match="empty"):
        parse_gates(source)


def test_wrong_types_and_an_oversized_expression() -> None:
    with pytest.raises(BadRequest, match="not int"):
        parse_gates(3)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="not int"):
        parse_gates([3])  # type: ignore[list-item]
    with pytest.raises(BadRequest, match="at most 2000"):
        parse_gates(",".join(["accuracy>=0.9"] * 200))


def test_a_metric_the_task_does_not_produce() -> None:
    with pytest.raises(BadRequest, match="'rmse' is not a metric a classification evaluation"):
        parse_gates("accuracy>=0.9, rmse<0.5", task="classification")
    with pytest.raises(BadRequest, match="'auc' is not a metric any evaluation") as caught:
        parse_gates("auc>=0.9")
    assert caught.value.status == 400
    assert "accuracy" in caught.value.message  # it lists what may be named
    with pytest.raises(BadRequest, match="task 'ranking'"):
        parse_gates("accuracy>=0.9", task="ranking")


def test_thresholds_pass_and_fail_at_the_boundary() -> None:
    gates = parse_gates("accuracy>=0.9, f1_macro>0.8")
    assert judge(gates, {"accuracy": 0.9, "f1_macro": 0.81}).passed
    verdict = judge(gates, {"accuracy": 0.95, "f1_macro": 0.8})
    assert not verdict.passed
    assert [c.passed for c in verdict.checks] == [True, False]
    assert verdict.checks[1].value == 0.8
    assert verdict.reasons == ["f1_macro>0.8: f1_macro is 0.8"]
    assert judge(parse_gates("accuracy==1"), {"accuracy": 0.1 * 10}).passed


def test_a_missing_or_nan_metric_fails() -> None:
    gates = parse_gates("accuracy>=0.5")
    for metrics in ({}, {"accuracy": float("nan")}, {"accuracy": None}, {"accuracy": True}):
        verdict = judge(gates, metrics)
        assert not verdict.passed
        assert verdict.reasons == ["accuracy>=0.5: the candidate has no finite accuracy"]


def test_higher_is_better_against_the_baseline() -> None:
    gates = parse_gates("accuracy>=0.9")
    worse = judge(gates, {"accuracy": 0.92}, {"accuracy": 0.95})
    assert not worse.passed
    assert worse.checks[0].passed  # the threshold holds; only the regression fails
    check = worse.regressions[0]
    assert (check.metric, check.candidate, check.baseline, check.higher_is_better) == \
        ("accuracy", 0.92, 0.95, True)
    assert "accuracy regressed: 0.92 is lower than the baseline's 0.95" in worse.reasons[0]
    assert judge(gates, {"accuracy": 0.92}, {"accuracy": 0.95}, tolerance=0.05).passed
    assert not judge(gates, {"accuracy": 0.92}, {"accuracy": 0.95}, tolerance=0.02).passed
    assert judge(gates, {"accuracy": 0.97}, {"accuracy": 0.95}).passed
    assert judge(gates, {"accuracy": 0.95}, {"accuracy": 0.95}).passed


def test_lower_is_better_against_the_baseline() -> None:
    gates = parse_gates("rmse<0.5, mae<1", task="regression")
    verdict = judge(gates, {"rmse": 0.4, "mae": 0.2}, {"rmse": 0.3, "mae": 0.3})
    assert not verdict.passed
    assert [(r.metric, r.passed) for r in verdict.regressions] == [("rmse", False), ("mae", True)]
    assert "rmse regressed: 0.4 is higher than the baseline's 0.3" in verdict.reasons[0]
    assert judge(gates, {"rmse": 0.4, "mae": 0.2}, {"rmse": 0.3, "mae": 0.3},
                 tolerance=0.15).passed


def test_a_baseline_without_the_metric_fails_and_none_means_no_comparison() -> None:
    gates = parse_gates("accuracy>=0.5")
    verdict = judge(gates, {"accuracy": 0.9}, {"f1_macro": 0.9})
    assert not verdict.passed
    assert verdict.reasons == ["accuracy: the baseline has no finite accuracy to compare"]
    alone = judge(gates, {"accuracy": 0.9}, None)
    assert alone.passed and alone.regressions == []


def test_each_gated_metric_is_compared_once() -> None:
    gates = parse_gates("accuracy>=0.8, accuracy<=0.99")
    verdict = judge(gates, {"accuracy": 0.9}, {"accuracy": 0.85})
    assert verdict.passed and len(verdict.checks) == 2 and len(verdict.regressions) == 1


@pytest.mark.parametrize("tolerance", [-0.1, float("nan"), float("inf"), True])
def test_bad_tolerance(tolerance: float) -> None:
    with pytest.raises(BadRequest, match="tolerance"):
        judge(parse_gates("accuracy>=0.5"), {"accuracy": 1.0}, {"accuracy": 1.0}, tolerance)


def test_verdict_as_json() -> None:
    verdict = judge(parse_gates("accuracy>=0.9"), {"accuracy": 0.8}, {"accuracy": 0.85})
    document = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert document["passed"] is False
    assert document["checks"][0] == {"gate": "accuracy>=0.9", "metric": "accuracy", "op": ">=",
                                     "threshold": 0.9, "value": 0.8, "passed": False,
                                     "reason": "accuracy>=0.9: accuracy is 0.8"}
    assert document["regressions"][0]["baseline"] == 0.85
    assert len(document["reasons"]) == 2


@given(st.sampled_from([">=", ">", "<=", "<"]), st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_operators_match_python(op: str, threshold: float, value: float) -> None:
    gate = parse_gates(f"mae{op}{threshold!r}")[0]
    assert gate.threshold == threshold
    expected = {">=": value >= threshold, ">": value > threshold,
                "<=": value <= threshold, "<": value < threshold}[op]
    assert judge([gate], {"mae": value}).passed is expected
