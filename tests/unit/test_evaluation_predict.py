"""The generic predictor on real small models (scikit-learn estimators, torch modules with
weights set by hand), with preprocessing, the input kinds it reads, and bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from stratus.errors import BadRequest
from stratus.evaluation import predict as predict_module
from stratus.evaluation.predict import evaluate_model, predict

# Two well-separated clusters: x and y both negative -> "neg", both positive -> "pos".
TRAIN = pd.DataFrame({"x": [-3.0, -2.5, -2.0, -3.5, 2.0, 2.5, 3.0, 3.5],
                      "y": [-2.0, -3.0, -2.5, -2.2, 2.2, 3.1, 2.4, 2.9],
                      "label": ["neg"] * 4 + ["pos"] * 4})
QUERY = pd.DataFrame({"x": [-4.0, 4.0, -2.8], "y": [-4.0, 3.0, -1.9]})


def linear(weight: list[list[float]], bias: list[float]) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    return LogisticRegression().fit(TRAIN[["x", "y"]], TRAIN["label"])


def test_sklearn_classifier_on_every_input_kind(classifier: LogisticRegression) -> None:
    expected = ["neg", "pos", "neg"]
    frame_with_extra = QUERY.assign(note=["a", "b", "c"])
    inputs = [QUERY, pa.Table.from_pandas(QUERY), QUERY.to_dict("records"),
              {"x": list(QUERY["x"]), "y": list(QUERY["y"])}, frame_with_extra]
    for data in inputs:
        assert predict(classifier, data, task="classification", features=["x", "y"]) == expected


def test_sklearn_fitted_on_an_array_takes_a_frame_without_warnings() -> None:
    model = LinearRegression().fit(np.array([[0.0], [1.0], [2.0]]), np.array([1.0, 3.0, 5.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = predict(model, pd.DataFrame({"x": [10.0, -1.0]}), task="regression")
    assert got == pytest.approx([21.0, -1.0])  # y = 2x + 1
    assert all(type(v) is float for v in got)


def test_sklearn_fitted_on_a_frame_checks_the_columns(classifier: LogisticRegression) -> None:
    with pytest.raises(BadRequest, match="cannot predict on these features"):
        predict(classifier, QUERY.rename(columns={"y": "z"}), task="classification")


def test_torch_classifier_maps_the_argmax_through_classes() -> None:
    model = linear([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [0.0, 0.0, 0.0])
    rows = pd.DataFrame({"a": [5.0, 0.0, -5.0], "b": [0.0, 5.0, -5.0]})
    # scores: [5, 0, -5], [0, 5, -5], [-5, -5, 10]
    assert predict(model, rows, task="classification") == [0, 1, 2]
    assert predict(model, rows, task="classification", classes=["a", "b", "c"]) == ["a", "b", "c"]
    assert predict(model, rows[["b", "a"]], task="classification", features=["a", "b"]) == [0, 1, 2]


def test_torch_regressor_is_squeezed_and_keeps_its_mode() -> None:
    model = torch.nn.Sequential(linear([[2.0, 3.0]], [1.0]), torch.nn.Dropout(0.5))
    model.train()
    rows = np.array([[1.0, 1.0], [0.0, -1.0], [2.0, 0.5]])
    # Dropout is off in eval mode, so the values are exact: 2a + 3b + 1.
    assert predict(model, rows, task="regression") == pytest.approx([6.0, -2.0, 6.5])
    assert model.training  # put back as it was found


def test_torch_in_several_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict_module, "BATCH_ROWS", 3)
    model = linear([[1.0]], [0.5])
    rows = pd.DataFrame({"v": [float(i) for i in range(10)]})
    assert predict(model, rows, task="regression") == pytest.approx([i + 0.5 for i in range(10)])


def test_preprocessing_uses_the_training_statistics() -> None:
    # The statistics come from the training rows, never from the rows being predicted: a
    # single request row normalised by its own mean would always be zero.
    train = pd.DataFrame({"h": [150.0, 160.0, 170.0, 180.0, 190.0]})
    scaler = StandardScaler().fit(train)  # mean 170, std sqrt(200)

    def preprocess(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(scaler.transform(frame), columns=frame.columns)

    model = linear([[1.0]], [0.0])  # returns the normalised value itself
    got = predict(model, pd.DataFrame({"h": [190.0]}), task="regression", preprocess=preprocess)
    assert got == pytest.approx([20.0 / np.sqrt(200.0)])


def test_evaluate_model_scores_against_the_target(classifier: LogisticRegression) -> None:
    test = pd.DataFrame({"x": [-3.0, 3.0, 2.5, -2.0], "y": [-3.0, 3.0, 2.0, 2.0],
                         "label": ["neg", "pos", "pos", "pos"]})
    # The last row sits on the "neg" side of x; whatever the model says there, the first
    # three are certain, so accuracy is 3/4 or 1.
    got = evaluate_model(classifier, test, task="classification", target="label")
    predicted = predict(classifier, test, task="classification", features=["x", "y"])
    assert predicted[:3] == ["neg", "pos", "pos"]
    assert got["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, test["label"],
                                                                        strict=True)) / 4)
    assert got["confusion_matrix"]["labels"] == ["neg", "pos"]


def test_evaluate_a_torch_regressor() -> None:
    model = linear([[2.0]], [0.0])
    data = pd.DataFrame({"v": [1.0, 2.0, 3.0], "target": [2.0, 4.0, 7.0]})
    got = evaluate_model(model, data, task="regression", target="target")
    assert got["mae"] == pytest.approx(1 / 3)  # predictions 2, 4, 6
    assert got["rmse"] == pytest.approx(np.sqrt(1 / 3))


ModelFactory = Callable[[], Any]


@pytest.mark.parametrize(("model", "data", "kwargs", "message"), [
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": [1.0]}), {"features": ["w"]},
     "no column"),
    (lambda: object(), pd.DataFrame({"v": [1.0]}), {}, "cannot predict with a object"),
    (lambda: linear([[1.0], [2.0]], [0.0, 0.0]), pd.DataFrame({"v": [1.0]}),
     {"classes": ["a", "b", "c"]}, "2 classes but 3 class names"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": [1.0]}), {},
     "one score per class"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": [1.0, None]}), {"task": "regression"},
     "nulls"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": ["a"]}), {"task": "regression"},
     "numeric features"),
    (lambda: linear([[1.0]], [0.0]), np.array([1.0, 2.0]), {"task": "regression"}, "2-D"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": []}), {"task": "regression"},
     "no rows"),
    (lambda: linear([[1.0]], [0.0]), "v=1", {"task": "regression"}, "cannot read features"),
    (lambda: linear([[1.0]], [0.0]), [1, 2], {"task": "regression"}, "each be an object"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": [1.0]}), {"task": "ranking"},
     "task 'ranking'"),
    (lambda: linear([[1.0]], [0.0]), pd.DataFrame({"v": [1.0]}), {"features": "v"},
     "not one string"),
])
def test_bad_input(model: ModelFactory, data: Any, kwargs: dict[str, Any], message: str) -> None:
    options = {"task": "classification", **kwargs}
    with pytest.raises(BadRequest, match=message) as caught:
        predict(model(), data, **options)
    assert caught.value.status == 400


def test_evaluate_model_bad_target() -> None:
    model = linear([[1.0]], [0.0])
    with pytest.raises(BadRequest, match="no target column 'y'"):
        evaluate_model(model, pd.DataFrame({"v": [1.0]}), task="regression", target="y")
    with pytest.raises(BadRequest, match="cannot also be a feature"):
        evaluate_model(model, pd.DataFrame({"v": [1.0], "y": [1.0]}), task="regression",
                       target="y", features=["v", "y"])


def test_preprocessing_with_the_datasets_statistics() -> None:
    """As a job or an evaluation wires it: the statistics fitted on the training split and
    saved with the model, applied by stratus.datasets.stats to the rows being predicted
    (evaluation does not import datasets, its layer peer: the caller binds the function)."""
    from stratus.datasets.stats import apply_statistics, fit_statistics

    train = pa.table({"h": [150.0, 160.0, 170.0, 180.0, 190.0], "w": [1.0, 1.0, 1.0, 1.0, 1.0]})
    stats = fit_statistics(train, ["h", "w"])  # h: mean 170, std sqrt(200); w: std 0
    model = linear([[1.0, 10.0]], [0.0])  # normalised h, plus 10 x the centred w
    rows = pd.DataFrame({"h": [190.0, 170.0], "w": [3.0, 1.0]})
    got = predict(model, rows, task="regression",
                  preprocess=lambda frame: apply_statistics(frame, stats))
    assert got == pytest.approx([20.0 / np.sqrt(200.0) + 20.0, 0.0])
