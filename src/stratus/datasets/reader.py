"""Reading a dataset version, or one of its splits, in a job: from the layout the server
resolved (``DatasetService.resolve``), with no server access. The rows of a split come from
the recorded seed and fractions, so every reader of ``iris@1`` ``train`` sees the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from stratus.datasets.parse import batches, read_all
from stratus.datasets.schema import arrow_schema
from stratus.datasets.splits import split_indices
from stratus.errors import IntegrityError, NotFound

if TYPE_CHECKING:
    import pandas as pd
    from torch.utils.data import Dataset


def split_names(layout: dict[str, Any]) -> list[str]:
    split = layout.get("split")
    return sorted(split["fractions"]) if split else []


def check_split(layout: dict[str, Any], split: str | None) -> None:
    """NotFound unless ``split`` is None (the whole version) or one of its splits."""
    if split is None:
        return
    names = split_names(layout)
    if split not in names:
        has = f"its splits are {', '.join(names)}" if names else "it has no splits"
        raise NotFound(f"dataset {layout['ref']} has no split {split!r}; {has}")


def rows_of(layout: dict[str, Any], split: str | None) -> npt.NDArray[np.int64] | None:
    """The row numbers of ``split`` (ascending), or None for the whole version."""
    check_split(layout, split)
    if split is None:
        return None
    recorded = layout["split"]
    return split_indices(int(layout["rows"]), int(recorded["seed"]), recorded["fractions"], split)


def read_version(layout: dict[str, Any]) -> pa.Table:
    """Every row of the version, in the recorded types."""
    sources = [(relative, Path(layout["files"][relative]["path"])) for relative in sorted(layout["files"])]
    table = read_all(sources, layout["format"], arrow_schema(layout["schema"]))
    if table.num_rows != int(layout["rows"]):
        raise IntegrityError(f"dataset {layout['ref']} reads as {table.num_rows} rows, but "
                             f"{layout['rows']} were recorded at push")
    return table


def take_rows(layout: dict[str, Any], rows: npt.NDArray[np.int64]) -> pa.Table:
    """The rows numbered ``rows`` (ascending) of the version, reading its files only as far as
    the last of them: a preview of a large version costs its first rows, not all of them."""
    schema = arrow_schema(layout["schema"])
    needed = int(rows[-1]) + 1 if len(rows) else 0
    read: list[pa.RecordBatch] = []
    have = 0
    for relative in sorted(layout["files"]):
        if have >= needed:
            break
        for batch in batches(relative, Path(layout["files"][relative]["path"]), layout["format"],
                             schema):
            read.append(batch)
            have += batch.num_rows
            if have >= needed:
                break
    return pa.Table.from_batches(read, schema).take(pa.array(rows, type=pa.int64()))


class DatasetSplit:
    """One split of a version (or all of it), read once and kept."""

    def __init__(self, layout: dict[str, Any], split: str | None) -> None:
        self.layout = layout
        self.split = split
        self.indices = rows_of(layout, split)
        self.schema = arrow_schema(layout["schema"])
        self._table: pa.Table | None = None

    @property
    def ref(self) -> str:
        return f"{self.layout['ref']}:{self.split}" if self.split else str(self.layout["ref"])

    @property
    def num_rows(self) -> int:
        return int(self.layout["rows"]) if self.indices is None else len(self.indices)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def to_arrow(self) -> pa.Table:
        if self._table is None:
            table = read_version(self.layout)
            if self.indices is not None:
                table = table.take(pa.array(self.indices))
            self._table = table
        return self._table

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def to_torch(self, features: list[str] | None = None,
                 target: str | None = None) -> Dataset[Any]:
        """A ``torch.utils.data.Dataset`` of ``(features,)`` or ``(features, target)`` tensors:
        features as float32, a numeric target as is (integers int64), a text target as class
        indices (the sorted labels are the dataset's ``classes``). torch is imported here."""
        from stratus.datasets.torchdata import table_dataset

        return table_dataset(self.to_arrow(), features, target)

    def __repr__(self) -> str:
        return f"DatasetSplit({self.ref!r}, rows={self.num_rows}, columns={self.columns})"


def open_split(layout: dict[str, Any], split: str | None = None) -> DatasetSplit:
    """A split of a resolved version (``None``: all its rows); NotFound for an unknown split."""
    return DatasetSplit(layout, split)
