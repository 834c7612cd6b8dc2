"""Preprocessing statistics: fitted on the training split only, saved with the model, and
applied unchanged at prediction time (normalising a request with its own mean and std would
give every single-row request zeros).

``fit_statistics`` gives each column's mean, standard deviation (of the population, as
scikit-learn's ``StandardScaler``), minimum and maximum, nulls left out; ``apply_statistics``
maps ``x`` to ``(x - mean) / std`` (a constant column, std 0, is only centred) and keeps
nulls null. Both take a ``pyarrow.Table`` or a ``pandas.DataFrame``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from stratus.errors import BadRequest

Statistics = dict[str, dict[str, float]]
Data = TypeVar("Data")
_FIELDS = ("mean", "std", "min", "max")


def _columns_of(data: Any) -> list[str]:
    if isinstance(data, pa.Table):
        return list(data.column_names)
    columns = getattr(data, "columns", None)
    if columns is None or not hasattr(data, "copy"):
        raise BadRequest(f"statistics work on a pyarrow Table or a pandas DataFrame, not "
                         f"{type(data).__name__}")
    return [str(name) for name in columns]


def _values(data: Any, name: str) -> npt.NDArray[np.float64]:
    """A column as float64, nulls as NaN; BadRequest for a column that is not numeric."""
    if name not in _columns_of(data):
        raise BadRequest(f"no column {name!r}; the columns are {', '.join(_columns_of(data))}")
    column = data.column(name) if isinstance(data, pa.Table) else data[name]
    try:
        if isinstance(column, pa.ChunkedArray):
            kind = column.type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_boolean(kind)):
                raise TypeError(kind)
            filled = column.cast(pa.float64()).fill_null(math.nan)
            return np.asarray(filled.to_numpy(), dtype=np.float64)
        from pandas.api.types import is_bool_dtype, is_numeric_dtype  # loaded with the frame

        if not (is_numeric_dtype(column.dtype) or is_bool_dtype(column.dtype)):
            raise TypeError(column.dtype)
        return np.asarray(column.to_numpy(dtype="float64", na_value=math.nan), dtype=np.float64)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise BadRequest(f"column {name!r} is not numeric; statistics need numbers") from None


def fit_statistics(data: Any, columns: Sequence[str]) -> Statistics:
    """Each column's ``{"mean", "std", "min", "max"}``, as plain floats (JSON-ready)."""
    if isinstance(columns, str):
        raise BadRequest("columns is a list of column names, not one string")
    fitted: Statistics = {}
    for name in columns:
        values = _values(data, name)
        present = values[~np.isnan(values)]
        if present.size == 0:
            raise BadRequest(f"column {name!r} has no values to fit statistics on")
        fitted[name] = {"mean": float(present.mean()), "std": float(present.std()),
                        "min": float(present.min()), "max": float(present.max())}
    return fitted


def _checked(stats: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """(mean, scale) per column, from statistics that may have come back through JSON."""
    checked = {}
    for name, entry in stats.items():
        try:
            mean, std = float(entry["mean"]), float(entry["std"])
        except (TypeError, KeyError, ValueError):
            raise BadRequest(f"statistics for {name!r} need a numeric mean and std") from None
        if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
            raise BadRequest(f"statistics for {name!r}: mean {mean} and std {std} are not usable")
        checked[name] = (mean, std if std > 0 else 1.0)
    return checked


def apply_statistics(data: Data, stats: Mapping[str, Any]) -> Data:
    """A copy of ``data`` (of the same kind) with the columns in ``stats`` normalised as float64."""
    checked = _checked(stats)
    if isinstance(data, pa.Table):
        table: pa.Table = data
        for name, (mean, scale) in checked.items():
            values = (_values(table, name) - mean) / scale
            normalised = pa.array(values, mask=np.isnan(values), type=pa.float64())
            table = table.set_column(table.column_names.index(name), name, normalised)
        return cast(Data, table)
    frame: Any = data
    _columns_of(frame)
    copy = frame.copy()
    for name, (mean, scale) in checked.items():
        copy[name] = (_values(frame, name) - mean) / scale
    return cast(Data, copy)
