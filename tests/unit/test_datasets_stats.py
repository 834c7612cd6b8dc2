"""Preprocessing statistics: fitted on the training rows as scikit-learn's StandardScaler fits
them, applied unchanged to other rows (one request's row too), on Arrow tables and pandas
frames, through JSON and back."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from stratus.datasets.stats import apply_statistics, fit_statistics
from stratus.errors import BadRequest

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture
def iris() -> pd.DataFrame:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    return frame


def test_fitted_statistics_match_standard_scaler(iris: pd.DataFrame) -> None:
    train, test = iris.iloc[:120], iris.iloc[120:]
    scaler = StandardScaler().fit(train[FEATURES])
    for data in (train, pa.Table.from_pandas(train, preserve_index=False)):
        stats = fit_statistics(data, FEATURES)
        assert list(stats) == FEATURES
        np.testing.assert_allclose([stats[c]["mean"] for c in FEATURES], scaler.mean_)
        np.testing.assert_allclose([stats[c]["std"] for c in FEATURES], scaler.scale_)
        assert stats[FEATURES[0]]["min"] == train[FEATURES[0]].min()
        assert stats[FEATURES[0]]["max"] == train[FEATURES[0]].max()
    stats = json.loads(json.dumps(fit_statistics(train, FEATURES)))  # saved with the model
    expected = scaler.transform(test[FEATURES])
    applied = apply_statistics(test, stats)
    assert isinstance(applied, pd.DataFrame)
    np.testing.assert_allclose(applied[FEATURES].to_numpy(), expected)
    assert applied["target"].tolist() == test["target"].tolist(), "other columns untouched"
    assert test[FEATURES[0]].iloc[0] == iris[FEATURES[0]].iloc[120], "the input is not changed"
    table = apply_statistics(pa.Table.from_pandas(test, preserve_index=False), stats)
    assert isinstance(table, pa.Table)
    np.testing.assert_allclose(np.column_stack([table.column(c).to_numpy() for c in FEATURES]),
                               expected)


def test_one_request_row_is_normalised_with_the_training_statistics(iris: pd.DataFrame) -> None:
    """The bug not to copy: normalising a request by its own mean and std gives zeros."""
    stats = fit_statistics(iris.iloc[:120], FEATURES)
    row = iris.iloc[[140]][FEATURES]
    applied = apply_statistics(row, stats)
    assert not np.allclose(applied.to_numpy(), 0.0)
    for column in FEATURES:
        expected = (row[column].iloc[0] - stats[column]["mean"]) / stats[column]["std"]
        assert applied[column].iloc[0] == pytest.approx(expected)


def test_nulls_are_left_out_of_the_fit_and_stay_null() -> None:
    table = pa.table({"x": pa.array([1.0, None, 3.0]), "n": pa.array([2, 4, None])})
    stats = fit_statistics(table, ["x", "n"])
    assert stats["x"] == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert stats["n"]["mean"] == 3.0
    applied = apply_statistics(table, stats)
    assert applied.column("x").to_pylist() == [-1.0, None, 1.0]
    assert applied.column("n").to_pylist() == [-1.0, 1.0, None]
    assert applied.schema.field("n").type == pa.float64()


def test_a_constant_column_is_only_centred() -> None:
    frame = pd.DataFrame({"c": [5.0, 5.0, 5.0]})
    stats = fit_statistics(frame, ["c"])
    assert stats["c"]["std"] == 0.0
    assert apply_statistics(frame, stats)["c"].tolist() == [0.0, 0.0, 0.0]


def test_statistics_refuse_what_they_cannot_use() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"], "empty": [math.nan, math.nan]})
    with pytest.raises(BadRequest, match="not numeric"):
        fit_statistics(frame, ["s"])
    with pytest.raises(BadRequest, match="not numeric"):
        fit_statistics(pa.table({"s": ["a"]}), ["s"])
    with pytest.raises(BadRequest, match="no column 'y'"):
        fit_statistics(frame, ["y"])
    with pytest.raises(BadRequest, match="no values"):
        fit_statistics(frame, ["empty"])
    with pytest.raises(BadRequest, match="list of column names"):
        fit_statistics(frame, "x")
    with pytest.raises(BadRequest, match="need a numeric mean and std"):
        apply_statistics(frame, {"x": {"mean": 1.0}})
    with pytest.raises(BadRequest, match="not usable"):
        apply_statistics(frame, {"x": {"mean": 1.0, "std": -1.0}})
    with pytest.raises(BadRequest, match="pyarrow Table or a pandas DataFrame"):
        apply_statistics([1, 2], {"x": {"mean": 1.0, "std": 1.0}})
