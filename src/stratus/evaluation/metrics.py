"""Classification and regression metrics over true and predicted values, computed with
scikit-learn and returned as JSON-ready dicts under stable names."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stratus.errors import BadRequest

TASKS = ("classification", "regression")
CLASSIFICATION_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
REGRESSION_METRICS = ("mae", "rmse", "r2")
# The direction of each scalar metric: what "better" means when a candidate meets a baseline.
HIGHER_IS_BETTER = {"accuracy": True, "precision_macro": True, "recall_macro": True,
                    "f1_macro": True, "r2": True, "mae": False, "rmse": False}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise BadRequest(f"task {task!r} is not one of {', '.join(TASKS)}")
    return task


def metric_names(task: str) -> tuple[str, ...]:
    """The scalar metrics an evaluation of ``task`` produces (what a gate may name)."""
    return CLASSIFICATION_METRICS if check_task(task) == "classification" else REGRESSION_METRICS


def _array(values: Any, what: str) -> npt.NDArray[Any]:
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise BadRequest(f"{what} must be a sequence of values, not {type(values).__name__}")
    array = np.asarray(values)
    if array.ndim != 1:
        raise BadRequest(f"{what} must be one-dimensional, not of shape {array.shape}")
    if array.size == 0:
        raise BadRequest(f"{what} is empty: there is nothing to evaluate")
    return array


def _pair(y_true: Any, y_pred: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    true, pred = _array(y_true, "y_true"), _array(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise BadRequest(f"y_true has {true.size} values but y_pred has {pred.size}")
    return true, pred


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can carry (labels and counts)."""
    return value.item() if isinstance(value, np.generic) else value


def _label_key(label: Any) -> str:
    # JSON object keys are strings; 1 and "1" cannot both be labels of one evaluation.
    return label if isinstance(label, str) else json_label(label)


def json_label(label: Any) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def classification_metrics(y_true: Any, y_pred: Any,
                           labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, the same per class, and the confusion matrix with
    its label order (rows: true labels, columns: predicted). ``labels`` fixes that order and
    the classes averaged over; by default, every label seen in either array, sorted."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    true, pred = _pair(y_true, y_pred)
    if labels is None:
        try:
            order = sorted({plain(v) for v in true} | {plain(v) for v in pred})
        except TypeError:
            raise BadRequest("labels of different kinds (numbers and strings) cannot be "
                             "compared: make y_true and y_pred of one kind") from None
    else:
        order = [plain(v) for v in labels]
        if not order or len(set(order)) != len(order):
            raise BadRequest("labels must be a non-empty list without repeats")
    keys = [_label_key(label) for label in order]
    if len(set(keys)) != len(keys):
        raise BadRequest(f"labels {order!r} collide once written as JSON keys")
    try:
        with warnings.catch_warnings():
            # One class in all: the matrix is 1x1 by the labels' own order, as it should be.
            warnings.filterwarnings("ignore", message="A single label was found")
            precision, recall, f1, support = precision_recall_fscore_support(
                true, pred, labels=order, zero_division=0)
            macro = precision_recall_fscore_support(true, pred, labels=order, average="macro",
                                                    zero_division=0)
            matrix = confusion_matrix(true, pred, labels=order)
    except ValueError as exc:  # e.g. none of the given labels occurs in y_true
        raise BadRequest(f"cannot score these labels: {exc}") from None
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {key: {"precision": float(precision[i]), "recall": float(recall[i]),
                            "f1": float(f1[i]), "support": int(support[i])}
                      for i, key in enumerate(keys)},
        "confusion_matrix": {"labels": order, "matrix": matrix.astype(int).tolist()},
        "samples": int(true.size),
    }


def _numbers(values: npt.NDArray[Any], what: str) -> npt.NDArray[np.float64]:
    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} must hold numbers for a regression evaluation") from None
    if not np.isfinite(numbers).all():
        raise BadRequest(f"{what} holds NaN or infinite values")
    return numbers


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """MAE, RMSE and R²; R² is None for fewer than two samples, where it is undefined."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    true, pred = _pair(y_true, y_pred)
    true, pred = _numbers(true, "y_true"), _numbers(pred, "y_pred")
    r2 = float(r2_score(true, pred)) if true.size >= 2 else None
    return {
        "mae": float(mean_absolute_error(true, pred)),
        "rmse": math.sqrt(float(mean_squared_error(true, pred))),
        "r2": r2,
        "samples": int(true.size),
    }


def evaluate(task: str, y_true: Any, y_pred: Any,
             labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """The metrics of ``task`` (``classification`` or ``regression``), with ``task`` in them."""
    if check_task(task) == "classification":
        return {"task": task, **classification_metrics(y_true, y_pred, labels)}
    if labels is not None:
        raise BadRequest("labels apply to a classification evaluation, not a regression one")
    return {"task": task, **regression_metrics(y_true, y_pred)}


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The gateable numbers of an evaluation (per class and the matrix left out)."""
    return {name: float(value) for name, value in metrics.items()
            if name in HIGHER_IS_BETTER and isinstance(value, int | float)
            and not isinstance(value, bool)}
