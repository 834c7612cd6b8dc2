"""Reading a version's files (CSV with ``pyarrow.csv``, Parquet with ``pyarrow.parquet``) into
one Arrow table: with the types inferred at push, or with the schema recorded then, so that
every later reader sees the same types. A file that does not parse is a ``BadRequest`` that
names the file and, for CSV, the line."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from stratus.errors import BadRequest

_ROW = re.compile(r"Row #(\d+): ")
_PREFIX = re.compile(r"^CSV (parse|conversion) error: ")

# (the file's name within the version, its plaintext on disk), in the version's order
Source = tuple[str, Path]


def _csv_options(schema: pa.Schema | None,
                 threads: bool) -> tuple[pcsv.ReadOptions, pcsv.ConvertOptions]:
    # One thread while inferring: only then does Arrow number the row of a parse error.
    read = pcsv.ReadOptions(use_threads=threads)
    # Empty cells and the usual markers (NA, NULL, ...) are nulls in every column, text too.
    types = {field.name: field.type for field in schema} if schema is not None else None
    convert = pcsv.ConvertOptions(strings_can_be_null=True, column_types=types)
    return read, convert


def _physical_line(path: Path, row: int) -> int:
    """The line of the file that Arrow counts as row ``row``: it skips empty lines."""
    seen = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.rstrip(b"\r\n"):
                seen += 1
                if seen == row:
                    return number
    return row


def _first_undecodable_line(path: Path) -> int | None:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _csv_error(label: str, path: Path, exc: pa.ArrowInvalid) -> BadRequest:
    message = str(exc).strip()
    if message == "Empty CSV file":
        return BadRequest(f"{label}: the file is empty (a CSV file needs a header line)")
    row = _ROW.search(message)
    detail = _PREFIX.sub("", _ROW.sub("", message))
    detail = detail[:1].lower() + detail[1:]
    if row is not None:
        return BadRequest(f"{label}: line {_physical_line(path, int(row.group(1)))}: {detail}")
    if "UTF8" in message or "UTF-8" in message:
        return _not_utf8(label, path)
    return BadRequest(f"{label}: {detail}")


def _not_utf8(label: str, path: Path) -> BadRequest:
    line = _first_undecodable_line(path)
    where = f"line {line}: " if line is not None else ""
    return BadRequest(f"{label}: {where}the text is not valid UTF-8")


def _read_csv(label: str, path: Path, schema: pa.Schema | None) -> pa.Table:
    read, convert = _csv_options(schema, threads=schema is not None)
    try:
        table = pcsv.read_csv(path, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _csv_error(label, path, exc) from None
    # Arrow infers bytes where text is not UTF-8; in a CSV that is a mistake to name.
    if schema is None and any(pa.types.is_binary(kind) for kind in table.schema.types):
        raise _not_utf8(label, path)
    return table


def _read_parquet(label: str, path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise BadRequest(f"{label} is not a readable Parquet file: {exc}") from None
    return table.replace_schema_metadata(None)


def check_columns(label: str, names: Sequence[str]) -> None:
    if not names:
        raise BadRequest(f"{label} has no columns")
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise BadRequest(f"{label}: column {position} has no name")
        if name in seen:
            raise BadRequest(f"{label}: the column name {name!r} appears twice")
        seen.add(name)


def read_file(label: str, path: Path, format: str, schema: pa.Schema | None = None) -> pa.Table:
    """One file as a table; with ``schema``, in its types (CSV is read as them, Parquet cast)."""
    table = _read_csv(label, path, schema) if format == "csv" else _read_parquet(label, path)
    check_columns(label, table.column_names)
    if schema is None or table.schema.equals(schema):
        return table
    if table.column_names != schema.names:
        raise BadRequest(f"{label}: its columns {table.column_names} are not the dataset's "
                         f"{schema.names}")
    return read_as(label, table, schema)


def unify(tables: Sequence[tuple[str, pa.Table]]) -> pa.Schema:
    """The one schema of several files: the same columns in the same order; a column may widen
    (an all-empty column takes the others' type, integers become floats beside floats), but
    text and numbers do not mix."""
    first_label, first = tables[0]
    for label, table in tables[1:]:
        if table.column_names != first.column_names:
            raise BadRequest(f"the files do not share one schema: {label} has the columns "
                             f"{table.column_names}, {first_label} has {first.column_names}")
    try:
        return pa.unify_schemas([table.schema for _, table in tables], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BadRequest(f"the files do not share one schema: {exc}") from None


def read_all(sources: Sequence[Source], format: str, schema: pa.Schema | None = None) -> pa.Table:
    """The version's files, in order, as one table. Without ``schema`` the types are inferred
    (file by file, then unified); with it, every file is read as those types."""
    if not sources:
        raise BadRequest("a dataset version holds at least one file")
    tables = [(label, read_file(label, path, format, schema)) for label, path in sources]
    target = schema if schema is not None else unify(tables)
    parts = [table if table.schema.equals(target) else read_as(label, table, target)
             for label, table in tables]
    return pa.concat_tables(parts)


def batches(label: str, path: Path, format: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A file's rows a batch at a time, in the recorded types: the first rows of a large file
    without reading all of it (a CSV is parsed only as far as it is read)."""
    try:
        if format == "csv":
            read, convert = _csv_options(schema, threads=True)
            source = pcsv.open_csv(path, read_options=read, convert_options=convert)
        else:
            source = pq.ParquetFile(path)
        with source:
            stream = source if format == "csv" else source.iter_batches()
            for batch in stream:
                if batch.schema.names != schema.names:
                    raise BadRequest(f"{label}: its columns {batch.schema.names} are not the "
                                     f"dataset's {schema.names}")
                yield batch if batch.schema.equals(schema) else batch.cast(schema)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadRequest(f"{label}: {exc}") from None


def read_as(label: str, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema`` (same columns), or a BadRequest naming the file."""
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadRequest(f"{label}: its columns do not convert to the dataset's types: {exc}") \
            from None
