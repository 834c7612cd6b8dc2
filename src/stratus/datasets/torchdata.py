"""A table as a torch ``Dataset`` of tensors; imported only when a job asks for one, so that
reading a dataset does not load torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import TensorDataset

from stratus.errors import BadRequest


class TableDataset(TensorDataset):
    """``TensorDataset`` that remembers which columns its tensors hold."""

    def __init__(self, tensors: Sequence[torch.Tensor], features: list[str], target: str | None,
                 classes: list[str] | None) -> None:
        super().__init__(*tensors)
        self.features = features
        self.target = target
        self.classes = classes  # a text target's labels; its tensor holds their indices


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise BadRequest(f"the dataset has no column {name!r}; its columns are "
                         f"{', '.join(table.column_names)}")
    column = table.column(name)
    if column.null_count:
        raise BadRequest(f"column {name!r} has {column.null_count} null value(s); drop or fill "
                         "them first (for example through to_pandas())")
    return column


def _numeric(table: pa.Table, name: str) -> npt.NDArray[np.float32]:
    column = _column(table, name)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise BadRequest(f"feature column {name!r} is {kind}, not a number; leave it out of "
                         "features, or encode it first")
    return np.asarray(column.to_numpy(), dtype=np.float32)


def _target(table: pa.Table, name: str) -> tuple[torch.Tensor, list[str] | None]:
    column = _column(table, name)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return torch.from_numpy(np.array(column.to_numpy(), dtype=np.int64)), None
    if pa.types.is_floating(kind):
        return torch.from_numpy(np.array(column.to_numpy(), dtype=np.float32)), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        classes = sorted(str(label) for label in pc.unique(column).to_pylist())
        codes = pc.index_in(column, value_set=pa.array(classes, type=kind))
        return torch.from_numpy(np.array(codes.to_numpy(), dtype=np.int64)), classes
    raise BadRequest(f"target column {name!r} is {kind}: a number or text is needed")


def table_dataset(table: pa.Table, features: list[str] | None,
                  target: str | None) -> TableDataset:
    names = list(features) if features is not None else [
        name for name in table.column_names if name != target]
    if not names:
        raise BadRequest("to_torch needs at least one feature column")
    if target is not None and target in names:
        raise BadRequest(f"column {target!r} is both a feature and the target")
    if table.num_rows:
        matrix = np.column_stack([_numeric(table, name) for name in names])
    else:
        matrix = np.empty((0, len(names)), dtype=np.float32)
        for name in names:
            _numeric(table, name)
    tensors = [torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))]
    classes = None
    if target is not None:
        labels, classes = _target(table, target)
        tensors.append(labels)
    return TableDataset(tensors, names, target, classes)
