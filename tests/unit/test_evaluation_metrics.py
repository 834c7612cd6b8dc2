"""Classification and regression metrics against values worked out by hand on small arrays,
their JSON shape, and the errors bad input gets."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.errors import BadRequest
from stratus.evaluation.metrics import (
    classification_metrics,
    evaluate,
    metric_names,
    regression_metrics,
    scalars,
)

# Confusion matrix of these (rows true 0,1,2; columns predicted 0,1,2):
#   [1 1 0]   class 0: precision 1/2, recall 1/2, f1 1/2
#   [0 2 0]   class 1: precision 2/3, recall 2/2, f1 0.8
#   [1 0 1]   class 2: precision 1/1, recall 1/2, f1 2/3
TRUE = [0, 0, 1, 1, 2, 2]
PRED = [0, 1, 1, 1, 2, 0]


def test_classification_by_hand() -> None:
    got = classification_metrics(TRUE, PRED)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert got["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert got["f1_macro"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert got["confusion_matrix"] == {"labels": [0, 1, 2],
                                       "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 1]]}
    assert got["per_class"]["1"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert got["per_class"]["2"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert got["samples"] == 6


def test_string_labels_sorted_and_a_class_never_predicted() -> None:
    got = classification_metrics(["cat", "dog", "cat"], ["cat", "cat", "cat"])
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert got["confusion_matrix"] == {"labels": ["cat", "dog"], "matrix": [[2, 0], [1, 0]]}
    # dog is never predicted: its precision is 0 (not NaN), so the document stays JSON.
    assert got["per_class"]["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert got["precision_macro"] == pytest.approx((2 / 3 + 0) / 2)
    json.dumps(got, allow_nan=False)


def test_given_labels_fix_the_order_and_the_average() -> None:
    got = classification_metrics(TRUE, PRED, labels=[2, 1, 0, 3])
    assert got["confusion_matrix"]["labels"] == [2, 1, 0, 3]
    assert got["confusion_matrix"]["matrix"] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 1, 1, 0],
                                                 [0, 0, 0, 0]]
    # Label 3 has no sample and counts as zero in the macro average over four classes.
    assert got["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1 + 0) / 4)
    assert got["per_class"]["3"]["support"] == 0


def test_numpy_and_pandas_inputs_give_plain_values() -> None:
    got = classification_metrics(pd.Series(np.array(TRUE, dtype=np.int64)),
                                 np.array(PRED, dtype=np.int32))
    assert all(type(label) is int for label in got["confusion_matrix"]["labels"])
    assert type(got["per_class"]["0"]["support"]) is int
    assert json.loads(json.dumps(got, allow_nan=False)) == got


def test_regression_by_hand() -> None:
    got = regression_metrics([3, -0.5, 2, 7], [2.5, 0.0, 2, 8])
    assert got["mae"] == pytest.approx((0.5 + 0.5 + 0 + 1) / 4)
    assert got["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0 + 1) / 4))
    mean = (3 - 0.5 + 2 + 7) / 4
    total = sum((v - mean) ** 2 for v in (3, -0.5, 2, 7))
    assert got["r2"] == pytest.approx(1 - 1.5 / total)
    assert got["samples"] == 4


def test_regression_of_one_sample_has_no_r2() -> None:
    got = regression_metrics([2.0], [1.5])
    assert got == {"mae": 0.5, "rmse": 0.5, "r2": None, "samples": 1}
    json.dumps(got, allow_nan=False)


def test_evaluate_names_the_task_and_scalars_keep_the_gateable_numbers() -> None:
    got = evaluate("classification", TRUE, PRED)
    assert got["task"] == "classification"
    assert set(scalars(got)) == set(metric_names("classification"))
    reg = evaluate("regression", [1, 2, 3], [1, 2, 4])
    assert set(scalars(reg)) == {"mae", "rmse", "r2"} == set(metric_names("regression"))


def test_metric_names() -> None:
    assert metric_names("classification") == ("accuracy", "precision_macro", "recall_macro",
                                              "f1_macro")
    assert metric_names("regression") == ("mae", "rmse", "r2")
    with pytest.raises(BadRequest, match="task 'ranking'"):
        metric_names("ranking")


@pytest.mark.parametrize(("y_true", "y_pred", "message"), [
    ([], [], "empty"),
    ([1, 2], [1], "2 values but y_pred has 1"),
    ([[1, 2]], [[1, 2]], "one-dimensional"),
    ("abc", "abc", "sequence"),
    ([1, "a"], [1, 2], "different kinds"),
])
def test_bad_classification_input(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        classification_metrics(y_true, y_pred)
    assert caught.value.status == 400


@pytest.mark.parametrize(("y_true", "y_pred", "message"), [
    ([1.0, float("nan")], [1.0, 2.0], "NaN or infinite"),
    (["a", "b"], [1.0, 2.0], "numbers"),
    ([1.0], [1.0, 2.0], "1 values but y_pred has 2"),
])
def test_bad_regression_input(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        regression_metrics(y_true, y_pred)


def test_bad_labels() -> None:
    with pytest.raises(BadRequest, match="without repeats"):
        classification_metrics(TRUE, PRED, labels=[0, 0, 1])
    with pytest.raises(BadRequest, match="collide"):
        classification_metrics([1, "1"], [1, "1"], labels=[1, "1"])
    with pytest.raises(BadRequest, match="labels apply"):
        evaluate("regression", [1.0, 2.0], [1.0, 2.0], labels=[1])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_accuracy_and_matrix_agree_with_counting(pairs: list[tuple[int, int]]) -> None:
    true, pred = [t for t, _ in pairs], [p for _, p in pairs]
    got = classification_metrics(true, pred)
    labels = got["confusion_matrix"]["labels"]
    matrix = got["confusion_matrix"]["matrix"]
    for i, actual in enumerate(labels):
        for j, predicted in enumerate(labels):
            assert matrix[i][j] == sum(1 for t, p in pairs if (t, p) == (actual, predicted))
    assert got["accuracy"] == pytest.approx(sum(t == p for t, p in pairs) / len(pairs))


def test_one_class_everywhere_and_labels_absent_from_the_truth() -> None:
    got = classification_metrics(["a", "a"], ["a", "a"])
    assert got["confusion_matrix"] == {"labels": ["a"], "matrix": [[2]]}
    assert got["f1_macro"] == 1.0
    with pytest.raises(BadRequest, match="cannot score these labels"):
        classification_metrics(["a", "a"], ["a", "b"], labels=["x", "y"])
